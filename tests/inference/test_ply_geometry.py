"""PLY round trips, crop mapping, camera conventions, unprojection and confidence filtering."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.geometry import (
    confidence_mask,
    fov_intrinsics,
    frame_points,
    intrinsics_to_original,
    invert_extrinsics,
    is_rotation,
    project_points,
    uncrop_map,
    unproject_depth,
)
from inference.ply import PlyStreamWriter, read_ply, read_ply_header, write_ply
from preprocess.crop import CropInfo, FramePreprocessor


def _rot(axis_angle):
    import cv2
    R, _ = cv2.Rodrigues(np.asarray(axis_angle, dtype=np.float64))
    return R


def test_ply_roundtrip_binary_with_extra(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(57, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(57, 3), dtype=np.uint8)
    conf = rng.random(57).astype(np.float32)
    n = write_ply(tmp_path / "a.ply", xyz, rgb, extra={"confidence": conf})
    assert n == 57
    fmt, count, props, _ = read_ply_header(tmp_path / "a.ply")
    assert fmt == "binary_little_endian" and count == 57
    assert [p[0] for p in props] == ["x", "y", "z", "red", "green", "blue", "confidence"]
    back = read_ply(tmp_path / "a.ply")
    np.testing.assert_array_equal(back["xyz"], xyz)
    np.testing.assert_array_equal(back["rgb"], rgb)
    np.testing.assert_array_equal(back["confidence"], conf)
    # exact size: header + 57 * (12 + 3 + 4) bytes
    assert (tmp_path / "a.ply").stat().st_size == read_ply_header(tmp_path / "a.ply")[3] + 57 * 19


def test_ply_stream_writer_and_errors(tmp_path):
    with PlyStreamWriter(tmp_path / "f.ply") as w:
        w.add(np.zeros((3, 3)), np.full((3, 3), 7, np.uint8))
        w.add(np.ones((2, 3)), np.full((2, 3), 9, np.uint8))
    back = read_ply(tmp_path / "f.ply")
    assert back["xyz"].shape == (5, 3)
    assert back["rgb"][:3].tolist() == [[7, 7, 7]] * 3 and back["rgb"][3:].tolist() == [[9, 9, 9]] * 2
    assert not list(tmp_path.glob(".*"))  # no temp files left
    with pytest.raises(RuntimeError):
        with PlyStreamWriter(tmp_path / "g.ply") as w:
            w.add(np.zeros((1, 3)))
            raise RuntimeError("boom")
    assert not (tmp_path / "g.ply").exists() and not list(tmp_path.glob(".*"))
    with pytest.raises(ValueError, match="uint8"):
        write_ply(tmp_path / "h.ply", np.zeros((2, 3)), np.zeros((2, 3), np.float32))
    (tmp_path / "bad.ply").write_bytes(b"nope\n")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(tmp_path / "bad.ply")


def test_ply_reads_ascii(tmp_path):
    p = tmp_path / "a.ply"
    p.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                 "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
                 "0 1 2 10 20 30\n3 4 5 40 50 60\n")
    back = read_ply(p)
    assert back["xyz"].tolist() == [[0, 1, 2], [3, 4, 5]] and back["rgb"][1].tolist() == [40, 50, 60]


def test_uncrop_places_crop_and_marks_validity():
    # original 10x8 (H, W); resized x2 to 20x16; crop rows 4..16 (h=12), all columns
    crop = CropInfo(orig_hw=(10, 8), resized_hw=(20, 16), box=(4, 0, 12, 16))
    assert crop.box_in_original() == (2, 0, 8, 8)
    x = torch.arange(12.0).view(12, 1).expand(12, 16).unsqueeze(0)  # (1, 12, 16) row ramp
    y, valid = uncrop_map(x, crop)
    assert y.shape == (1, 10, 8) and valid.shape == (10, 8)
    assert valid[2:8].all() and not valid[:2].any() and not valid[8:].any()
    # outside rows replicate the nearest edge row
    torch.testing.assert_close(y[0, 0], y[0, 2])
    torch.testing.assert_close(y[0, 9], y[0, 7])
    assert (y[0, 3:8, 0].diff() > 0).all()  # ramp preserved inside
    # integer maps go through nearest and keep their dtype
    yi, _ = uncrop_map(torch.ones(12, 16, dtype=torch.int32), crop)
    assert yi.dtype == torch.int32 and yi.shape == (10, 8)


def test_intrinsics_to_original_matches_pixel_mapping():
    crop = CropInfo(orig_hw=(300, 200), resized_hw=(777, 518), box=(129, 0, 518, 518))
    K_net = fov_intrinsics(0.9, 0.8, (518, 518))
    K = intrinsics_to_original(K_net, crop)
    # a 3D point projects to net pixel u_net, and to original pixel u = (u_net + left) / sx
    X = np.array([[0.3, -0.2, 2.0]])
    ext = np.hstack([np.eye(3), np.zeros((3, 1))])
    uv_net, _ = project_points(X, K_net, ext)
    uv, _ = project_points(X, K, ext)
    sx, sy = crop.scale_xy
    np.testing.assert_allclose(uv[0, 0], (uv_net[0, 0] + 0) / sx, rtol=1e-9)
    np.testing.assert_allclose(uv[0, 1], (uv_net[0, 1] + 129) / sy, rtol=1e-9)
    # identity crop leaves intrinsics unchanged
    np.testing.assert_allclose(intrinsics_to_original(K_net, CropInfo.identity((518, 518))), K_net)


def test_unproject_project_roundtrip_and_rotation():
    R = _rot([0.1, -0.3, 0.2])
    t = np.array([0.5, -0.1, 0.3])
    ext = np.hstack([R, t[:, None]])
    assert is_rotation(R) and not is_rotation(2 * R) and not is_rotation(-R)
    inv = invert_extrinsics(ext)
    np.testing.assert_allclose(invert_extrinsics(inv), ext, atol=1e-12)
    K = fov_intrinsics(1.0, 1.2, (6, 8))
    depth = np.linspace(1, 3, 48).reshape(6, 8)
    pts = unproject_depth(depth, K, ext)
    assert pts.shape == (6, 8, 3) and pts.dtype == np.float32
    uv, z = project_points(pts.reshape(-1, 3), K, ext)
    np.testing.assert_allclose(z, depth.reshape(-1), rtol=1e-5)
    vv, uu = np.meshgrid(np.arange(6) + 0.5, np.arange(8) + 0.5, indexing="ij")
    np.testing.assert_allclose(uv, np.stack([uu.ravel(), vv.ravel()], 1), atol=1e-4)


def test_confidence_filter_and_frame_points():
    conf = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    assert confidence_mask(conf, percentile=50).sum() == 50
    assert confidence_mask(conf, min_conf=91).sum() == 10
    valid = np.zeros((10, 10), bool)
    valid[:, :5] = True
    m = confidence_mask(conf, percentile=50, valid=valid)
    assert m.sum() == 25 and not m[:, 5:].any()
    with pytest.raises(ValueError):
        confidence_mask(conf, percentile=100)
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = np.arange(100).reshape(10, 10)
    ext = np.hstack([np.eye(3), np.zeros((3, 1))])
    pts = frame_points(np.ones((10, 10)), conf, fov_intrinsics(1, 1, (10, 10)), ext, rgb,
                       percentile=90, stride=1)
    assert pts["xyz"].shape == (10, 3) and (pts["rgb"][:, 0] >= 90).all()
    assert np.allclose(pts["xyz"][:, 2], 1.0)
    sub = frame_points(np.ones((10, 10)), conf, np.eye(3), ext, rgb, stride=2)
    assert sub["xyz"].shape == (25, 3)


def test_uncrop_pad_mode_and_agreement_with_cropinfo():
    # pad mode: 8x16 frame -> resized 7x14 placed in a 14x14 white canvas at top=-3 (window starts above image)
    crop = CropInfo(orig_hw=(8, 16), resized_hw=(7, 14), box=(-3, 0, 14, 14))
    x = torch.zeros(1, 14, 14)
    x[:, 3:10] = 1.0  # the image part of the padded input
    y, valid = uncrop_map(x, crop)
    assert valid.all() and torch.allclose(y, torch.ones(1, 8, 16))
    info = FramePreprocessor(target_width=28, mode="crop").plan((40, 20))  # portrait: centre crop
    m = torch.rand(2, *info.input_hw)
    ours, ours_valid = uncrop_map(m, info)
    theirs = info.uncrop(m)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours_valid, info.valid_mask())
    assert (ours - theirs)[:, ours_valid].abs().mean() < 0.05
    assert torch.equal(ours, theirs)  # uncrop_map is CropInfo.uncrop with replicated edges
    # intrinsics agree with the preprocess pixel mapping (integer-centre there, +0.5 here)
    K = intrinsics_to_original(fov_intrinsics(0.7, 0.9, info.input_hw), info)
    xy_net = np.array([[3.0, 5.0]])
    xy_orig = info.input_to_original_xy(xy_net.copy())
    Kn = fov_intrinsics(0.7, 0.9, info.input_hw)
    ray = np.linalg.inv(Kn) @ np.array([xy_net[0, 0] + 0.5, xy_net[0, 1] + 0.5, 1.0])
    uvw = K @ ray
    np.testing.assert_allclose(uvw[:2] / uvw[2] - 0.5, xy_orig[0], atol=1e-6)
