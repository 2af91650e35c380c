"""Frame sources and geometry-preserving image preprocessing for the StreamVGGT backbone.

Frame sources
    * a folder of images (HyperNeRF ``<scene>/rgb/2x/000001.png``, Neu3D ``<scene>/camXX/images/0000.png``),
    * a scene folder (``rgb/2x`` or ``images`` inside it is used; a TUM RGB-D / Bonn sequence's ``rgb/``),
    * a video file (``.mp4``/``.avi``/``.mov``/``.mkv``, read with OpenCV); its frame keys are
      ``000001``, ``000002``, ... (1-based, 6 digits, the HyperNeRF convention).

The frame key of an image is its file stem; frames are ordered by a natural sort of the stems.

Pixels are read the way the user sees them: an image's EXIF orientation (phones store portrait photos as landscape
pixels plus a tag) is applied by every reader (:func:`read_frame`, :func:`read_frame_published`, the training
loader, :func:`image_size`), exactly as ``PIL.ImageOps.exif_transpose`` does. Grayscale and 16-bit images become
8-bit RGB (16-bit values / 257, rounded); an alpha channel is composited onto white. A frame that cannot be decoded
is an error naming it (never skipped: a skipped frame would shift every later frame's time).

How a frame becomes the network input (resize, crop, pad, the published quarter turn) and how predictions map
back onto its pixels is :mod:`preprocess.crop` (``CropInfo``, ``FramePreprocessor``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps

from utils.cli import UserError, reading

logger = logging.getLogger(__name__)


class FrameSourceMissing(UserError, FileNotFoundError):
    """A frame source that does not exist or holds no frames."""


class FrameSourceInvalid(UserError, ValueError):
    """A frame source that cannot be used as it is (not a video, duplicate frame keys, a frame of another size)."""


class FrameDecodeError(UserError, OSError):
    """A frame (or video) that cannot be decoded: truncated, empty, corrupted, unsupported."""

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
PUBLISHED_IMAGE_EXTS = (".png", ".jpg", ".jpeg")
#: the frame folders a scene folder may hold, in the order they are looked for: HyperNeRF, Neu3D camera, TUM / Bonn
FRAME_SUBDIRS = ("rgb/2x", "images", "rgb")


@dataclass(frozen=True)
class FrameRef:
    """One frame of a video: ``key`` (file stem or ``000001``-style for videos), 0-based ``index`` in the
    source, ``path`` of the image or video file, and for videos the 0-based ``video_frame`` to decode."""

    key: str
    index: int
    path: Path
    video_frame: int | None = None

    @property
    def is_video(self) -> bool:
        return self.video_frame is not None


def _natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def is_video_file(path: str | Path) -> bool:
    """True if ``path`` has a video extension (``.mp4``, ``.avi``, ...)."""
    return Path(path).suffix.lower() in VIDEO_EXTS


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS
             and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.stem))


def resolve_frame_folder(path: str | Path) -> Path:
    """The folder that holds the frames of ``path``: itself if it contains images, else ``rgb/2x``
    (HyperNeRF), ``images`` (Neu3D camera folder) or ``rgb`` (TUM RGB-D / Bonn sequence, frames listed in
    ``rgb.txt``) inside it. Raises FileNotFoundError otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise FrameSourceMissing("not a folder", path, "pass a frame folder, a scene folder or a video file")
    if _image_files(path):
        return path
    for sub in FRAME_SUBDIRS:
        if (path / sub).is_dir() and _image_files(path / sub):
            return path / sub
    raise FrameSourceMissing(
        "no frames found", path, f"put the frames in it, or in rgb/2x/ (HyperNeRF), images/ (Neu3D camera) or rgb/ "
        f"(TUM RGB-D / Bonn); "
        f"image types: {', '.join(IMAGE_EXTS)}")


def count_video_frames(path: str | Path) -> int:
    """Number of frames OpenCV can decode from ``path`` (counted by grabbing, not the container's claim)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FrameDecodeError("OpenCV cannot open this video", path, "is the codec supported by this OpenCV build? "
                      "convert it to frames or to an mp4 with ffmpeg)")
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def list_frames(source: str | Path) -> list[FrameRef]:
    """Frames of a frame folder, a scene folder (``rgb/2x`` or ``images`` inside) or a video file, in order.

    Raises FileNotFoundError when there are none, ValueError on duplicate frame keys (e.g. ``1.png`` and
    ``1.jpg``).
    """
    source = Path(source)
    if source.is_file():
        if not is_video_file(source):
            raise FrameSourceInvalid(f"not a video file (supported: {', '.join(VIDEO_EXTS)})", source,
                                     "pass a video, a folder of frames or a scene folder")
        n = count_video_frames(source)
        if n == 0:
            raise FrameSourceMissing("no frame could be decoded from this video", source,
                                     "check the file, or convert it to frames or to an mp4 with ffmpeg")
        return [FrameRef(key=f"{i + 1:06d}", index=i, path=source, video_frame=i) for i in range(n)]
    if not source.exists():
        raise FrameSourceMissing("no such file or folder", source, "check the path")
    files = _image_files(resolve_frame_folder(source))
    keys = [p.stem for p in files]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise FrameSourceInvalid(f"several files share the frame key(s) {dup[:5]}", source, "keep one image per key")
    return [FrameRef(key=p.stem, index=i, path=p) for i, p in enumerate(files)]


def list_frames_published(source: str | Path) -> list[FrameRef]:
    """Frames as the published inference lists them: the ``.png``/``.jpg``/``.jpeg`` files (any case) of the frame
    folder, ordered by a plain sort of their names (``sorted(os.listdir(...))``, not our natural sort)."""
    folder = resolve_frame_folder(source)
    names = sorted(n for n in (p.name for p in folder.iterdir() if p.is_file())
                   if n.lower().endswith(PUBLISHED_IMAGE_EXTS))
    if not names:
        raise FrameSourceMissing("no .png/.jpg/.jpeg frames (the published reader takes only those)", folder,
                                 "convert the frames to PNG or JPEG")
    keys = [Path(n).stem for n in names]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise FrameSourceInvalid(f"several files share the frame key(s) {dup[:5]}", folder, "keep one image per key")
    return [FrameRef(key=Path(n).stem, index=i, path=folder / n) for i, n in enumerate(names)]


def read_frame_published(ref: FrameRef) -> np.ndarray:
    """Decode a frame as the published loader does (PIL): an ``RGBA`` image is alpha-composited onto white
    (PIL's integer compositing), then every image is converted to RGB. -> uint8 (H, W, 3)."""
    if ref.is_video:
        return read_frame(ref)
    try:
        with Image.open(ref.path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)  # as displayed, as every reader of ours
            if img.mode == "RGBA":
                img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
            return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable copy (asarray is read-only)
    except (OSError, SyntaxError, ValueError) as e:
        raise FrameDecodeError(f"cannot be decoded as an image ({e})", ref.path,
                               "the file is truncated or corrupted: replace or remove it") from None


EXIF_ORIENTATION = 0x0112


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: the PNG chunks PIL reads an orientation from: ``eXIf``, and text chunks (a "Raw profile type exif", XMP)
_PNG_METADATA_CHUNKS = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt"})


def _png_without_metadata(path: str | Path) -> bool:
    """True when ``path`` is a complete PNG with none of :data:`_PNG_METADATA_CHUNKS`, found by walking its chunk
    headers (a few bytes each, no decoding). PIL looks for an orientation in a PNG by decoding the whole image
    (an ``eXIf`` chunk may follow the pixels), so a plain PNG frame was decoded twice; False for anything else
    (not a PNG, metadata present, truncated), which then goes through PIL as before."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return False
            pos = 8
            while True:
                f.seek(pos)
                head = f.read(8)
                if len(head) < 8:
                    return False  # no IEND: truncated (the decoder reports it)
                kind = head[4:]
                if kind in _PNG_METADATA_CHUNKS:
                    return False
                if kind == b"IEND":
                    return True
                pos += 12 + int.from_bytes(head[:4], "big")  # length, type, data, CRC
    except OSError:
        return False


def orientation_of(im: Image.Image, path: str | Path) -> int:
    """EXIF orientation of an opened image (PIL's reading, 1..8), without decoding a plain PNG's pixels."""
    if im.format == "PNG" and _png_without_metadata(path):
        return 1
    value = im.getexif().get(EXIF_ORIENTATION, 1)
    return int(value) if value in range(1, 9) else 1


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation (1..8; 1 = as stored) of an image file, from its header; 1 when it has none or the
    header cannot be parsed (the decoder then reports the damaged file)."""
    try:
        with Image.open(path) as im:
            return orientation_of(im, path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 1


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Stored (H, W, ...) pixels -> as displayed under EXIF ``orientation`` (PIL ``ImageOps.exif_transpose``'s
    mapping: 2 mirror, 3 half turn, 4 flip, 5 transpose, 6 quarter turn clockwise, 7 transverse, 8 counter-
    clockwise). Returns a contiguous array (a copy unless ``orientation`` is 1)."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
           8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](img)) if orientation in ops else img


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file as displayed (EXIF orientation applied), from its header only."""
    with Image.open(path) as im:
        w, h = im.size
        o = orientation_of(im, path)
    return (w, h) if o in (5, 6, 7, 8) else (h, w)


def _to_rgb_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    """OpenCV image (BGR/BGRA/gray, uint8/uint16) -> RGB uint8; alpha is composited onto white."""
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise FrameDecodeError(f"unsupported pixel type {img.dtype}", path, "convert the frames to 8-bit PNG/JPEG")
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        rgb = img[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        img = (rgb + 0.5).astype(np.uint8)
    return np.ascontiguousarray(img[:, :, 2::-1])


def read_frame(ref: FrameRef) -> np.ndarray:
    """Decode one frame as RGB uint8 (H, W, 3). For video frames this seeks by decoding from the start;
    use :func:`iter_frames` to read many frames of a video."""
    if ref.is_video:
        for _, rgb in iter_frames([ref]):
            return rgb
    with reading(ref.path, "the file is truncated or corrupted: replace or remove it"):  # cv2.error names it
        img = cv2.imread(str(ref.path), cv2.IMREAD_UNCHANGED)  # (UNCHANGED: 16-bit and alpha kept, EXIF ignored)
    if img is None:
        raise FrameDecodeError("cannot be decoded as an image", ref.path,
                               "the file is empty, truncated or corrupted: replace or remove it")
    return apply_orientation(_to_rgb_uint8(img, ref.path), exif_orientation(ref.path))


def iter_frames(refs: Iterable[FrameRef], reader=None) -> Iterator[tuple[FrameRef, np.ndarray]]:
    """Yield ``(ref, rgb uint8 (H,W,3))`` for ``refs`` in order. Video frames are decoded sequentially with one
    open capture per video (frames in between are grabbed, not converted), so memory stays one frame.
    ``reader(ref)`` decodes image files (default :func:`read_frame`; :func:`read_frame_published` for the
    published preset)."""
    reader = reader or read_frame
    cap: cv2.VideoCapture | None = None
    cap_path: Path | None = None
    pos = 0
    try:
        for ref in refs:
            if not ref.is_video:
                yield ref, reader(ref)
                continue
            if cap is None or cap_path != ref.path or ref.video_frame < pos:
                if cap is not None:
                    cap.release()
                cap = cv2.VideoCapture(str(ref.path))
                if not cap.isOpened():
                    raise FrameDecodeError("OpenCV cannot open this video", ref.path, "check the file")
                cap_path, pos = ref.path, 0
            while pos < ref.video_frame:
                if not cap.grab():
                    raise FrameDecodeError(f"the video ends before frame {ref.video_frame}", ref.path,
                                           "the file is truncated: re-encode or replace it")
                pos += 1
            ok, bgr = cap.read()
            if not ok:
                raise FrameDecodeError(f"frame {ref.video_frame} cannot be decoded", ref.path,
                                       "the file is truncated or corrupted: re-encode or replace it")
            pos += 1
            yield ref, _to_rgb_uint8(bgr, ref.path)
    finally:
        if cap is not None:
            cap.release()

