"""Ground-truth readers on small files written here in each dataset's own format, values checked by hand."""

from __future__ import annotations

import json
import math
import struct

import cv2
import numpy as np
import pytest

from eval.geometry.readers import (
    GroundTruthError,
    read_cam,
    read_dpt,
    read_sequence,
    read_tum_png,
    sequence_names,
)
from tests.eval.geometry.helpers import write_geometry


def test_sintel_dpt_reader(tmp_path):
    # tag 202021.25, width 3, height 2, then rows
    raw = struct.pack("<fii", 202021.25, 3, 2) + struct.pack("<6f", 1.0, 2.0, 3.0, 4.5, 5.5, 100.0)
    (tmp_path / "frame_0001.dpt").write_bytes(raw)
    d = read_dpt(tmp_path / "frame_0001.dpt")
    assert d.dtype == np.float32 and d.shape == (2, 3)
    assert d.tolist() == [[1.0, 2.0, 3.0], [4.5, 5.5, 100.0]]
    (tmp_path / "bad.dpt").write_bytes(struct.pack("<fii", 1.0, 3, 2) + b"\0" * 24)
    with pytest.raises(GroundTruthError, match="wrong tag"):
        read_dpt(tmp_path / "bad.dpt")
    (tmp_path / "short.dpt").write_bytes(raw[:-4])
    with pytest.raises(GroundTruthError, match="truncated"):
        read_dpt(tmp_path / "short.dpt")


def _cam_bytes(K, extr):
    return struct.pack("<f", 202021.25) + struct.pack("<9d", *np.ravel(K)) + struct.pack("<12d", *np.ravel(extr))


def test_sintel_cam_reader_and_sequence(tmp_path):
    K = [[500.0, 0, 512], [0, 500.0, 218], [0, 0, 1]]
    # world-to-camera: rotation 90 degrees about z, translation (1, 2, 3): camera centre = -R^T t
    extr = [[0.0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3]]
    root = tmp_path / "training"
    (root / "camdata_left" / "alley_1").mkdir(parents=True)
    (root / "depth" / "alley_1").mkdir(parents=True)
    for i in (1, 2, 3):
        (root / "camdata_left" / "alley_1" / f"frame_000{i}.cam").write_bytes(_cam_bytes(K, extr))
        (root / "depth" / "alley_1" / f"frame_000{i}.dpt").write_bytes(
            struct.pack("<fii", 202021.25, 2, 1) + struct.pack("<2f", float(i), 80.0))
    Kr, Er = read_cam(root / "camdata_left" / "alley_1" / "frame_0001.cam")
    assert Kr.tolist() == K and Er.tolist() == extr
    assert sequence_names(root, "sintel") == ["alley_1"]
    gt = read_sequence(root, "sintel", "alley_1")
    assert gt.keys == ["frame_0001", "frame_0002", "frame_0003"]
    c2w = gt.c2w["frame_0002"]
    # centre = -R^T t = -[[0,1,0],[-1,0,0],[0,0,1]] @ (1,2,3) = (-2, 1, -3)
    assert np.allclose(c2w[:3, 3], [-2.0, 1.0, -3.0]) and np.allclose(c2w[:3, :3], np.array(extr)[:, :3].T)
    assert gt.read_depth(gt.depth_files["frame_0003"]).tolist() == [[3.0, 80.0]]
    (root / "camdata_left" / "alley_1" / "frame_0003.cam").unlink()
    with pytest.raises(GroundTruthError, match="2 camera files for 3 frames"):
        read_sequence(root, "sintel", "alley_1")


def _write_tum(seq, rgb_t, depth_t, pose_rows):
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    (seq / "rgb.txt").write_text("# color images\n# file: 'x'\n# timestamp filename\n"
                                 + "".join(f"{t:.6f} rgb/{t:.6f}.png\n" for t in rgb_t))
    (seq / "depth.txt").write_text("# depth maps\n" + "".join(f"{t:.6f} depth/{t:.6f}.png\n" for t in depth_t))
    (seq / "groundtruth.txt").write_text("# ground truth trajectory\n# timestamp tx ty tz qx qy qz qw\n"
                                         + "".join(" ".join(f"{v:.6f}" for v in r) + "\n" for r in pose_rows))
    for t in rgb_t:
        cv2.imwrite(str(seq / "rgb" / f"{t:.6f}.png"), np.zeros((4, 6, 3), np.uint8))
    for i, t in enumerate(depth_t):
        d = np.full((4, 6), 5000 * (i + 1), np.uint16)
        d[0, 0] = 0
        cv2.imwrite(str(seq / "depth" / f"{t:.6f}.png"), d)


def test_tum_sequence_nearest_timestamp_association(tmp_path):
    seq = tmp_path / "rgbd_dataset_freiburg3_walking_xyz"
    h = math.sqrt(0.5)
    _write_tum(seq, [10.00, 10.10, 10.20], [9.98, 10.04, 10.13, 10.19],
               [[9.99, 0, 0, 0, 0, 0, 0, 1], [10.06, 1, 0, 0, 0, 0, h, h], [10.11, 2, 0, 0, 0, 0, 0, 1],
                [10.30, 3, 0, 0, 0, 0, 0, 1]])
    gt = read_sequence(seq, "tum", None)
    assert gt.keys == ["10.000000", "10.100000", "10.200000"]
    # depth: 10.00 -> 9.98 (value 1 m), 10.10 -> 10.13 (3 m; 10.04 is 0.06 away), 10.20 -> 10.19 (4 m)
    vals = [gt.read_depth(gt.depth_files[k])[1, 1] for k in gt.keys]
    assert vals == [1.0, 3.0, 4.0]
    d = gt.read_depth(gt.depth_files["10.000000"])
    assert d.dtype == np.float64 and d[0, 0] == 0.0  # 0 = no measurement
    # poses: 10.00 -> 9.99, 10.10 -> 10.11, 10.20 -> 10.11 (0.09 vs 10.30's 0.10)
    assert [gt.c2w[k][0, 3] for k in gt.keys] == [0.0, 2.0, 2.0]
    assert gt.assoc_dt["10.200000"] == pytest.approx(0.09)
    assert read_sequence(seq, "bonn", None).keys == gt.keys  # bonn reads the same layout


def test_tum_png_is_metres_times_5000(tmp_path):
    cv2.imwrite(str(tmp_path / "d.png"), np.array([[0, 5000, 12345]], np.uint16))
    assert read_tum_png(tmp_path / "d.png").tolist() == [[0.0, 1.0, 2.469]]
    cv2.imwrite(str(tmp_path / "e.png"), np.array([[0, 50, 123]], np.uint8))
    with pytest.raises(GroundTruthError, match="16-bit"):
        read_tum_png(tmp_path / "e.png")


def test_tum_fewer_poses_than_frames(tmp_path):
    seq = tmp_path / "s"
    _write_tum(seq, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [[1.0, 0, 0, 0, 0, 0, 0, 1], [2.0, 0, 0, 0, 0, 0, 0, 1]])
    with pytest.raises(GroundTruthError, match="2 poses for 3 frames"):
        read_sequence(seq, "tum", None)


def test_hypernerf_camera_json(tmp_path):
    scene = tmp_path / "americano"
    (scene / "camera").mkdir(parents=True)
    cam = {"orientation": [[1, 0, 0], [0, 0, -1], [0, 1, 0]], "position": [0.5, 1.0, -2.0], "focal_length": 900.0,
           "principal_point": [480.0, 270.0], "skew": 0.0, "pixel_aspect_ratio": 1.0,
           "radial_distortion": [0, 0, 0], "tangential_distortion": [0, 0], "image_size": [960, 540]}
    for key in ("000001", "000002"):
        (scene / "camera" / f"{key}.json").write_text(json.dumps(cam))
    gt = read_sequence(scene, "hypernerf", None)
    assert gt.keys == ["000001", "000002"] and not gt.depth_files
    c2w = gt.c2w["000001"]
    assert c2w[:3, 3].tolist() == [0.5, 1.0, -2.0]
    assert c2w[:3, :3].tolist() == [[1, 0, 0], [0, 0, 1], [0, -1, 0]]  # the transpose of the orientation
    (scene / "camera" / "000002.json").write_text(json.dumps({"position": [0, 0, 0]}))
    with pytest.raises(GroundTruthError, match="orientation"):
        read_sequence(scene, "hypernerf", None)


def test_synthetic_gt_uses_our_format_and_its_valid_mask(tmp_path):
    scene = tmp_path / "demo"
    depth = np.full((2, 3, 4), 2.0, np.float32)
    valid = np.ones((2, 3, 4), bool)
    valid[1, 0, 0] = False
    c2w = np.tile(np.eye(4), (2, 1, 1))
    c2w[1, :3, 3] = [0.0, 0.0, 1.5]
    write_geometry(scene / "gt", depth, c2w, valid=valid)
    gt = read_sequence(scene, "synthetic", None)
    assert gt.keys == ["000001", "000002"]
    d = gt.read_depth(gt.depth_files["000002"])
    assert d[0, 0] == 0.0 and d[1, 1] == 2.0  # invalid pixels carry no ground truth
    assert np.allclose(gt.c2w["000002"], c2w[1])
