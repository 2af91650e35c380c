"""Frame discovery, decoding and geometry-preserving preprocessing (preprocess/frames.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from preprocess.crop import CropInfo, FramePreprocessor
from preprocess.frames import iter_frames, list_frames, read_frame


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


# ---------------------------------------------------------------- the published 'original' mode
ORIGINAL_BOXES = [  # (W, H) -> (turned?, box (top, left, h, w) on the (turned) frame), computed by hand
    ((536, 960), (0, (4, 2, 952, 532))),  # HyperNeRF 2x portrait: 960 // 14 * 14 = 952, (960 - 952) // 2 = 4
    ((960, 536), (1, (4, 2, 952, 532))),  # the same frame lying down: turned first
    ((75, 45), (1, (2, 1, 70, 42))),  # turned to 45 x 75: 42 = 45 // 14 * 14, left 1; 70, top (75 - 70) // 2 = 2
    ((50, 73), (0, (1, 4, 70, 42))),
    ((30, 30), (0, (1, 1, 28, 28))),  # square: not turned (only W > H is)
]


@pytest.mark.parametrize("wh,expected", ORIGINAL_BOXES)
def test_original_mode_crop_boxes(wh, expected):
    from preprocess.crop import FramePreprocessor

    W, H = wh
    info = FramePreprocessor(mode="original").plan((H, W))
    assert (info.rot90, info.box) == expected
    assert info.orig_hw == (H, W) and info.source_hw == ((W, H) if expected[0] else (H, W))


@pytest.mark.parametrize("wh", [(75, 45), (50, 73), (960, 536)])
def test_original_mode_gives_the_published_tensor(wh):
    """PIL's ROTATE_90 of a landscape frame, the centre crop to multiples of 14, ToTensor's /255: bit for bit."""
    from PIL import Image

    from preprocess.crop import FramePreprocessor

    W, H = wh
    rgb = np.random.default_rng(W).integers(0, 256, (H, W, 3), dtype=np.uint8)
    img, info = FramePreprocessor(mode="original").prepare(rgb)
    im = Image.fromarray(rgb)
    if W > H:
        im = im.transpose(Image.Transpose.ROTATE_90)
    w, h = im.size
    left, top = (w - w // 14 * 14) // 2, (h - h // 14 * 14) // 2
    ref = torch.from_numpy(np.array(im.crop((left, top, left + w // 14 * 14, top + h // 14 * 14))))
    assert torch.equal(img, ref.permute(2, 0, 1).float().div(255))
    # a map on the network grid goes back onto the original pixels: uncrop turns it back
    back = info.uncrop(img)
    assert back.shape == (3, H, W)
    y0, x0, y1, x1 = info.box_in_original()
    assert torch.equal(info.turn(back)[:, y0:y1, x0:x1], img)


def test_turned_pixel_coordinates_round_trip():
    from preprocess.crop import FramePreprocessor

    info = FramePreprocessor(mode="original").plan((45, 75))
    x = torch.arange(45 * 75, dtype=torch.float32).view(45, 75)
    turned = info.turn(x)
    for v, u in [(0, 0), (10, 3), (74, 44)]:  # (row, col) on the turned frame
        o = info.input_to_original_xy(torch.tensor([[u - info.box[1], v - info.box[0]]], dtype=torch.float64))[0]
        assert turned[v, u] == x[int(o[1]), int(o[0])]
        back = info.original_to_input_xy(o[None])[0]
        assert back.tolist() == [u - info.box[1], v - info.box[0]]


def test_published_listing_and_reader(tmp_path):
    """Plain sort of names (10 before 9), .png/.jpg/.jpeg any case only; RGBA composited on white as PIL does."""
    from PIL import Image

    from preprocess.frames import list_frames_published, read_frame_published

    rgba = np.random.default_rng(1).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "9.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "10.JPG")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "11.bmp")
    refs = list_frames_published(tmp_path)
    assert [r.path.name for r in refs] == ["10.JPG", "9.png"] and [r.index for r in refs] == [0, 1]
    white = Image.alpha_composite(Image.new("RGBA", (5, 6), (255, 255, 255, 255)), Image.fromarray(rgba, "RGBA"))
    assert np.array_equal(read_frame_published(refs[1]), np.asarray(white.convert("RGB")))
