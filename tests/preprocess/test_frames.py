"""Frame discovery, decoding and geometry-preserving preprocessing (preprocess/frames.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from preprocess.frames import CropInfo, FramePreprocessor, iter_frames, list_frames, read_frame


def _write_png(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


def test_hypernerf_neu3d_and_plain_folders_natural_order(tmp_path):
    img = np.zeros((8, 10, 3), np.uint8)
    for i in (10, 2, 1):
        _write_png(tmp_path / "hn" / "rgb" / "2x" / f"{i:06d}.png", img)
    refs = list_frames(tmp_path / "hn")  # scene folder -> rgb/2x
    assert [r.key for r in refs] == ["000001", "000002", "000010"]
    assert [r.index for r in refs] == [0, 1, 2]
    assert list_frames(tmp_path / "hn" / "rgb" / "2x") == refs
    for name in ("10", "9", "0000"):  # natural sort, not lexicographic
        _write_png(tmp_path / "cam00" / "images" / f"{name}.png", img)
    assert [r.key for r in list_frames(tmp_path / "cam00")] == ["0000", "9", "10"]
    with pytest.raises(FileNotFoundError, match="no frames found"):
        list_frames(tmp_path / "hn" / "rgb")  # neither images nor rgb/2x nor images/ inside


def test_read_frame_rgb_order_alpha_and_gray(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    _write_png(tmp_path / "a" / "0.png", rgb)
    out = read_frame(list_frames(tmp_path / "a")[0])
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()
    bgra = np.zeros((4, 5, 4), np.uint8)  # fully transparent black -> white
    (tmp_path / "b").mkdir()
    assert cv2.imwrite(str(tmp_path / "b" / "0.png"), bgra)
    assert (read_frame(list_frames(tmp_path / "b")[0]) == 255).all()


def test_video_frames_keys_and_sequential_decoding(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 16))
    assert writer.isOpened(), "mp4v writer unavailable in this OpenCV build"
    for i in range(5):
        writer.write(np.full((16, 32, 3), 40 * i, np.uint8))
    writer.release()
    refs = list_frames(path)
    assert [r.key for r in refs] == ["000001", "000002", "000003", "000004", "000005"]
    got = list(iter_frames(refs[1:4:2]))  # frames 1 and 3: sequential seek by grabbing
    assert [r.key for r, _ in got] == ["000002", "000004"]
    for (ref, rgb) in got:
        assert rgb.shape == (16, 32, 3)
        assert abs(float(rgb.mean()) - 40 * ref.index) < 4  # codec tolerance
    assert abs(float(read_frame(refs[2]).mean()) - 80) < 4


@pytest.mark.parametrize(
    "mode,hw,resized,box",
    [
        ("crop", (536, 960), (294, 518), (0, 0, 294, 518)),  # 16:9 -> 518x294, 37x21 patches
        ("crop", (960, 536), (924, 518), (203, 0, 518, 518)),  # portrait: centre-cropped to 518
        ("pad", (536, 960), (294, 518), (-112, 0, 518, 518)),  # white padding above and below
        ("native", (536, 960), (536, 960), (2, 4, 532, 952)),  # no rotation, crop to multiples of 14
    ],
)
def test_preprocessor_geometry(mode, hw, resized, box):
    info = FramePreprocessor(518, mode).plan(hw)
    assert info.resized_hw == resized and info.box == box
    assert info.input_hw[0] % 14 == 0 and info.input_hw[1] % 14 == 0


def test_prepare_values_padding_and_no_rotation():
    rgb = np.random.default_rng(0).integers(0, 256, (30, 80, 3), dtype=np.uint8)
    img, info = FramePreprocessor(56, "pad").prepare(rgb)
    assert img.shape == (3, 56, 56) and img.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    top = -info.box[0]
    assert top > 0 and (img[:, :top] == 1.0).all() and (img[:, top + info.resized_hw[0]:] == 1.0).all()
    img, info = FramePreprocessor(14, "native").prepare(rgb)  # landscape stays landscape
    assert img.shape == (3, 28, 70) and info.box == (1, 5, 28, 70)
    assert torch.equal(img, torch.from_numpy(rgb[1:29, 5:75]).permute(2, 0, 1).float() / 255)


def test_uncrop_maps_back_to_original_pixels():
    # native mode: the input is an exact window, so uncrop restores it exactly and replicates the borders
    H, W = 31, 47
    orig = torch.arange(H * W, dtype=torch.float32).reshape(H, W)
    info = FramePreprocessor(14, "native").plan((H, W))
    net = orig[info.box[0]:info.box[0] + info.box[2], info.box[1]:info.box[1] + info.box[3]]
    back = info.uncrop(net[None])[0]
    assert back.shape == (H, W)
    valid = info.valid_mask()
    assert valid.sum() == net.numel() and torch.equal(back[valid], orig[valid])
    assert torch.equal(back[0, 1:-2], back[1, 1:-2])  # replicated edge row
    labels = info.uncrop(net.long()[None], interpolation="nearest", fill=-1)[0]
    assert labels.dtype == torch.long and (labels[~valid] == -1).all()

    # crop mode with resizing: a smooth image survives prepare -> uncrop up to interpolation error
    yy, xx = np.mgrid[0:112, 0:200]
    smooth = (127 + 100 * np.sin(xx / 23.0) * np.cos(yy / 17.0)).astype(np.uint8)
    rgb = np.repeat(smooth[:, :, None], 3, axis=2)
    img, info = FramePreprocessor(56, "crop").prepare(rgb)
    assert info.input_hw == (28, 56)
    back = info.uncrop(img)
    assert back.shape == (3, 112, 200)
    err = (back[0] - torch.from_numpy(smooth).float() / 255).abs()
    assert float(err.mean()) < 0.02, float(err.mean())

    # coordinates: input <-> original are inverse; the input centre is the original centre
    xy = torch.tensor([[0.0, 0.0], [27.5, 13.5], [55.0, 27.0]])
    assert torch.allclose(info.original_to_input_xy(info.input_to_original_xy(xy)), xy, atol=1e-5)
    centre = info.input_to_original_xy(torch.tensor([[27.5, 13.5]]))
    assert torch.allclose(centre, torch.tensor([[99.5, 55.5]]), atol=1e-4)


def test_cropinfo_dict_roundtrip():
    info = FramePreprocessor(518, "crop").plan((960, 536))
    assert CropInfo.from_dict(info.to_dict()) == info


def test_resize_mode_keeps_the_whole_portrait_frame():
    # HyperNeRF-style portrait 536x960 (W x H): crop would keep only a 518x518 square (about 56 % of the frame)
    full = FramePreprocessor(518, "resize").plan((960, 536))
    assert full.resized_hw == (924, 518) and full.input_hw == (924, 518) and full.box == (0, 0, 924, 518)
    assert bool(full.valid_mask().all())
    square = FramePreprocessor(518, "crop").plan((960, 536))
    assert square.input_hw == (518, 518) and not bool(square.valid_mask().all())
    # landscape frames: resize and crop give the same network input
    assert FramePreprocessor(518, "resize").plan((536, 960)).box == FramePreprocessor(518, "crop").plan((536, 960)).box
    assert FramePreprocessor().mode == "resize"
