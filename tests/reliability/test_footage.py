"""Real footage the way users bring it (issue 24): phone photos with an EXIF orientation are read as displayed, by
every reader identically; grayscale, 16-bit and RGBA frames become the RGB the convention says; videos in the
usual containers (one frame included) are read; the token extraction of EXIF-turned frames equals that of frames
whose pixels are turned."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from preprocess.frames import FrameRef, image_size, list_frames, read_frame, read_frame_published
from tests.reliability.test_semantics import run_main, snapshot

TINY = ("--backbone", "tiny", "--device", "cpu", "--no-progress")
H, W = 42, 56


def _pixels(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _save_with_orientation(path, rgb: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, exif=exif, **({"quality": 95} if path.suffix == ".jpg" else {}))


def _displayed(path) -> np.ndarray:
    """What an image viewer shows: PIL's decode with the EXIF orientation applied."""
    with Image.open(path) as im:
        return np.array(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_read_as_displayed_by_every_reader(tmp_path, orientation):
    from preprocess.crop import FramePreprocessor
    from preprocess.semantics.scene import image_hw
    from training.targets import frame_uint8, read_frame_uint8

    path = tmp_path / "000001.png"
    _save_with_orientation(path, _pixels(), orientation)
    ref = FrameRef("000001", 0, path)
    shown = _displayed(path)
    assert np.array_equal(read_frame(ref), shown)
    assert np.array_equal(read_frame_published(ref), shown)
    assert image_size(path) == shown.shape[:2] == image_hw(path)
    pre = FramePreprocessor(target_width=shown.shape[1] // 14 * 14, mode="crop")
    assert torch_equal(read_frame_uint8(ref, pre), frame_uint8(pre, shown))


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_jpeg_matches_opencvs_own_oriented_decode(tmp_path, orientation):
    """JPEG: our reader gives exactly what OpenCV's EXIF-aware decode (IMREAD_COLOR) gives: same decoder, same
    turn; and the shape a viewer shows."""
    path = tmp_path / "photo.jpg"
    _save_with_orientation(path, _pixels(1), orientation)
    ours = read_frame(FrameRef("photo", 0, path))
    assert np.array_equal(ours, cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])
    assert ours.shape == _displayed(path).shape


def test_gray_16bit_and_rgba_frames(tmp_path):
    rng = np.random.default_rng(2)
    g16 = rng.integers(0, 65536, (H, W), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g16)
    out = read_frame(FrameRef("g16", 0, tmp_path / "g16.png"))
    want = (g16.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    assert all(np.array_equal(out[..., c], want) for c in range(3))
    g8 = rng.integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(g8).save(tmp_path / "g8.png")
    assert np.array_equal(read_frame(FrameRef("g8", 0, tmp_path / "g8.png")), np.repeat(g8[..., None], 3, 2))
    rgba = np.dstack([_pixels(3), np.zeros((H, W), np.uint8)])  # fully transparent: white
    rgba[:5, :5, 3] = 255  # opaque corner: its own colour
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_frame(FrameRef("a", 0, tmp_path / "a.png"))
    assert np.array_equal(out[:5, :5], rgba[:5, :5, :3])
    assert (out[10:, 10:] == 255).all()


@pytest.mark.parametrize("ext,fourcc", [(".mp4", "mp4v"), (".avi", "MJPG"), (".avi", "XVID"), (".mov", "mp4v"),
                                        (".mkv", "mp4v"), (".webm", "VP80")])
def test_one_frame_videos_in_the_usual_containers(tmp_path, ext, fourcc):
    path = tmp_path / f"clip{ext}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30, (W, H))
    assert writer.isOpened(), f"this OpenCV build cannot write {fourcc} into {ext}"
    writer.write(np.full((H, W, 3), 90, np.uint8))
    writer.release()
    refs = list_frames(path)
    assert [r.key for r in refs] == ["000001"]
    rgb = read_frame(refs[0])
    assert rgb.shape == (H, W, 3) and abs(float(rgb.mean()) - 90) < 8  # lossy codecs: near the written grey


def test_a_one_frame_video_extracts(tmp_path, monkeypatch, capsys):
    from preprocess.extract_tokens import main

    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (W, H))
    writer.write(_pixels(4)[..., ::-1].copy())
    writer.release()
    monkeypatch.chdir(tmp_path)
    r = run_main(main, ["clip.mp4", *TINY], capsys)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "clip" / "tokens").iterdir()) == ["000001.safetensors", "meta.json"]


def test_tokens_of_exif_turned_frames_equal_those_of_turned_pixels(tmp_path, monkeypatch, capsys):
    """A phone folder (landscape pixels + orientation 6) gives the token bytes of the same frames stored upright."""
    from preprocess.extract_tokens import main

    for i in range(3):
        rgb = _pixels(10 + i)
        (tmp_path / "phone").mkdir(exist_ok=True)
        (tmp_path / "upright").mkdir(exist_ok=True)
        _save_with_orientation(tmp_path / "phone" / f"{i + 1:06d}.png", rgb, 6)
        Image.fromarray(np.rot90(rgb, -1).copy()).save(tmp_path / "upright" / f"{i + 1:06d}.png")
    monkeypatch.chdir(tmp_path)
    for name in ("phone", "upright"):
        r = run_main(main, [name, *TINY, "--out", f"tok/{name}/tokens"], capsys)
        assert r.returncode == 0, r.stderr
    a, b = snapshot(tmp_path / "tok" / "phone"), snapshot(tmp_path / "tok" / "upright")
    assert sorted(a) == sorted(b) and len(a) == 4
    assert all(a[k] == b[k] for k in a if k.endswith(".safetensors"))
    meta_a, meta_b = (json_of(a["tokens/meta.json"]), json_of(b["tokens/meta.json"]))
    assert meta_a["crop"]["orig_hw"] == [W, H]  # portrait as displayed
    assert {k: v for k, v in meta_a.items() if k != "source"} == {k: v for k, v in meta_b.items() if k != "source"}


def json_of(raw: bytes):
    import json

    return json.loads(raw)


def _png_with(path, how: str) -> None:
    """A PNG whose orientation (6 where there is one) sits where PIL looks for it."""
    rgb = _pixels(1)
    if how == "plain":
        cv2.imwrite(str(path), rgb[:, :, ::-1])
    elif how == "exif":
        _save_with_orientation(path, rgb, 6)
    else:
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        if how == "xmp":
            info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>')
        else:  # ImageMagick's raw profile: a text chunk of hex EXIF after a 3-line header
            exif = Image.Exif()
            exif[0x0112] = 6
            body = exif.tobytes().hex()
            info.add_text("Raw profile type exif", f"\nexif\n{len(body) // 2}\n{body}")
        Image.fromarray(rgb).save(path, pnginfo=info)


@pytest.mark.parametrize("how", ["plain", "exif", "xmp", "raw-profile"])
def test_png_orientation_from_every_chunk_pil_reads_and_no_second_decode_of_plain_pngs(tmp_path, how,
                                                                                      monkeypatch):
    from PIL import PngImagePlugin

    from preprocess.frames import exif_orientation
    from preprocess.semantics.scene import image_hw

    path = tmp_path / "000001.png"
    _png_with(path, how)
    shown = _displayed(path)
    assert (shown.shape[:2] == (H, W)) == (how == "plain")  # the orientation is really there
    assert exif_orientation(path) == (1 if how == "plain" else 6)
    assert image_size(path) == image_hw(path) == shown.shape[:2]
    assert np.array_equal(read_frame(FrameRef("000001", 0, path)), shown)
    if how == "plain":  # the header walk answers: PIL never decodes the pixels to look for an eXIf chunk
        def no_decode(self):
            raise AssertionError("decoded")

        monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decode)
        assert exif_orientation(path) == 1 and image_size(path) == (H, W) == image_hw(path)


def test_a_truncated_png_still_goes_through_pil(tmp_path):
    from preprocess.frames import exif_orientation

    path = tmp_path / "000001.png"
    _save_with_orientation(path, _pixels(2), 8)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 12])  # IEND cut off: the header walk does not vouch for it
    assert exif_orientation(path) == 8
