"""Frame sources and geometry-preserving image preprocessing for the StreamVGGT backbone.

Frame sources
    * a folder of images (HyperNeRF ``<scene>/rgb/2x/000001.png``, Neu3D ``<scene>/camXX/images/0000.png``),
    * a scene folder (``rgb/2x`` or ``images`` inside it is used),
    * a video file (``.mp4``/``.avi``/``.mov``/``.mkv``, read with OpenCV); its frame keys are
      ``000001``, ``000002``, ... (1-based, 6 digits, the HyperNeRF convention).

The frame key of an image is its file stem; frames are ordered by a natural sort of the stems.

Preprocessing (:class:`FramePreprocessor`) resizes and crops/pads each frame to multiples of the patch size
(14) and returns a :class:`CropInfo` that records exactly what was done, so predictions on the network grid can
be mapped back onto the original pixels (:meth:`CropInfo.uncrop`). Landscape frames are never rotated.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from utils.cli import UserError

logger = logging.getLogger(__name__)


class FrameSourceMissing(UserError, FileNotFoundError):
    """A frame source that does not exist or holds no frames."""


class FrameSourceInvalid(UserError, ValueError):
    """A frame source that cannot be used as it is (not a video, duplicate frame keys, a frame of another size)."""


class FrameDecodeError(UserError, OSError):
    """A frame (or video) that cannot be decoded: truncated, empty, corrupted, unsupported."""

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
MODES = ("resize", "crop", "pad", "native")
#: the published 4DLangVGGT inference mode: landscape frames turned 90 degrees counter-clockwise, each side
#: centre-cropped to a multiple of 14, no resize (``inference.run --preset published`` only: a frame turned
#: for the network is turned back in every output, so the fields still lie on the original pixels)
PUBLISHED_MODE = "original"
PUBLISHED_IMAGE_EXTS = (".png", ".jpg", ".jpeg")


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
    (HyperNeRF) or ``images`` (Neu3D camera folder) inside it. Raises FileNotFoundError otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise FrameSourceMissing("not a folder", path, "pass a frame folder, a scene folder or a video file")
    if _image_files(path):
        return path
    for sub in ("rgb/2x", "images"):
        if (path / sub).is_dir() and _image_files(path / sub):
            return path / sub
    raise FrameSourceMissing(
        "no frames found", path, f"put the frames in it, or in rgb/2x/ (HyperNeRF) or images/ (Neu3D camera); "
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
            if img.mode == "RGBA":
                img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
            return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except (OSError, SyntaxError, ValueError) as e:
        raise FrameDecodeError(f"cannot be decoded as an image ({e})", ref.path,
                               "the file is truncated or corrupted: replace or remove it") from None


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
    img = cv2.imread(str(ref.path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FrameDecodeError("cannot be decoded as an image", ref.path,
                               "the file is empty, truncated or corrupted: replace or remove it")
    return _to_rgb_uint8(img, ref.path)


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


@dataclass(frozen=True)
class CropInfo:
    """How an original frame was mapped onto the network input.

    The original (H, W) = ``orig_hw`` frame is first resized (bicubic) to ``resized_hw``; the network input is
    then the window ``box = (top, left, h, w)`` of the resized image, in resized-image pixels. A window
    reaching outside the resized image (negative ``top``/``left``, or past the far edge) means white padding
    (``pad`` mode). ``(h, w)`` = ``input_hw`` are multiples of the patch size. This is the one crop record of the
    project: inference (``inference.geometry``) maps predictions and intrinsics back to the original frame with it.

    ``rot90`` = 1 (the published ``original`` mode on a landscape frame): the frame was first turned 90 degrees
    counter-clockwise; ``source_hw`` is the turned size, ``resized_hw`` and ``box`` refer to the turned frame, and
    :meth:`uncrop` / :meth:`valid_mask` / :meth:`input_to_original_xy` turn back, so results lie on the original
    (H, W) = ``orig_hw`` pixels. Original continuous pixel (u, v) is (v, W - u) in the turned frame.
    """

    orig_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    box: tuple[int, int, int, int]
    mode: str = "crop"
    rot90: int = 0

    @property
    def source_hw(self) -> tuple[int, int]:
        """Size of the frame the resize starts from: ``orig_hw``, turned when ``rot90`` is odd."""
        H, W = self.orig_hw
        return (W, H) if self.rot90 % 2 else (H, W)

    def turn(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H, W) on the original frame -> (..., W, H) on the turned frame (identity without ``rot90``)."""
        return torch.rot90(x, self.rot90, dims=(-2, -1)) if self.rot90 % 4 else x

    def unturn(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`turn`: a map on the turned frame -> the same map on the original pixels."""
        return torch.rot90(x, -self.rot90, dims=(-2, -1)) if self.rot90 % 4 else x

    @property
    def input_hw(self) -> tuple[int, int]:
        return (self.box[2], self.box[3])

    @property
    def window(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of the input window in resized-image pixels."""
        top, left, h, w = self.box
        return (top, left, top + h, left + w)

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Resize factors (resized / source) along x and y (of the turned frame when ``rot90``)."""
        H, W = self.source_hw
        return (self.resized_hw[1] / W, self.resized_hw[0] / H)

    def clipped_window(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of the input window clipped to the resized image (a ``pad`` window reaches outside it)."""
        y0, x0, y1, x1 = self.window
        rh, rw = self.resized_hw
        return max(y0, 0), max(x0, 0), min(y1, rh), min(x1, rw)

    def box_in_original(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of the region the input covers, in source pixels (the turned frame when ``rot90``;
        rounded, clipped, non-empty)."""
        sx, sy = self.scale_xy
        cy0, cx0, cy1, cx1 = self.clipped_window()
        H, W = self.source_hw
        y0 = min(max(int(round(cy0 / sy)), 0), H - 1)
        x0 = min(max(int(round(cx0 / sx)), 0), W - 1)
        y1 = min(max(int(round(cy1 / sy)), y0 + 1), H)
        x1 = min(max(int(round(cx1 / sx)), x0 + 1), W)
        return y0, x0, y1, x1

    @classmethod
    def identity(cls, hw: tuple[int, int]) -> CropInfo:
        """No resize and no crop: the network input is the whole (H, W) = ``hw`` frame."""
        return cls(orig_hw=tuple(hw), resized_hw=tuple(hw), box=(0, 0, hw[0], hw[1]), mode="native")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        out = {"orig_hw": list(d["orig_hw"]), "resized_hw": list(d["resized_hw"]), "box": list(d["box"]),
               "mode": d["mode"], "input_hw": list(self.input_hw)}
        if self.rot90:
            out["rot90"] = self.rot90
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CropInfo:
        return cls(orig_hw=tuple(d["orig_hw"]), resized_hw=tuple(d["resized_hw"]), box=tuple(d["box"]),
                   mode=d.get("mode", "crop"), rot90=int(d.get("rot90", 0)))

    def input_to_original_xy(self, xy: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Map pixel coordinates (..., 2) as (x, y) from the network input to the original frame.
        Pixel centres are at integer coordinates here (``+0.5`` gives ``inference.geometry``'s convention)."""
        sx, sy = self.scale_xy
        out = xy * 1.0
        out[..., 0] = (xy[..., 0] + self.box[1] + 0.5) / sx - 0.5
        out[..., 1] = (xy[..., 1] + self.box[0] + 0.5) / sy - 0.5
        if self.rot90 % 4 == 1:  # turned (u', v') -> original (u, v) = (W - 1 - v', u') at pixel centres
            u, v = out[..., 0] * 1.0, out[..., 1] * 1.0
            out[..., 0] = self.orig_hw[1] - 1 - v
            out[..., 1] = u
        elif self.rot90 % 4:
            raise ValueError(f"rot90={self.rot90} is not supported (0 or 1)")
        return out

    def original_to_input_xy(self, xy: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Inverse of :meth:`input_to_original_xy`."""
        sx, sy = self.scale_xy
        if self.rot90 % 4 == 1:  # original (u, v) -> turned (v, W - 1 - u)
            turned = xy * 1.0
            turned[..., 0] = xy[..., 1]
            turned[..., 1] = self.orig_hw[1] - 1 - xy[..., 0]
            xy = turned
        out = xy * 1.0
        out[..., 0] = (xy[..., 0] + 0.5) * sx - 0.5 - self.box[1]
        out[..., 1] = (xy[..., 1] + 0.5) * sy - 0.5 - self.box[0]
        return out

    def valid_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(H, W) bool: original pixels inside :meth:`box_in_original` (those that have a prediction)."""
        y0, x0, y1, x1 = self.box_in_original()
        valid = torch.zeros(self.source_hw, dtype=torch.bool, device=device)
        valid[y0:y1, x0:x1] = True
        return self.unturn(valid)

    def uncrop(self, x: torch.Tensor, fill: float | None = None, interpolation: str = "bilinear") -> torch.Tensor:
        """Map a prediction on the network input grid back onto the original frame.

        x: (..., h, w) with (h, w) = ``input_hw``; returns (..., H, W) = ``orig_hw`` in ``x``'s dtype (turned back
        when ``rot90``).
        The part of the input that shows the frame (padding dropped) is resized onto :meth:`box_in_original`;
        original pixels outside that box (cropped away) get ``fill`` (None: replicate the nearest edge value of
        the box). ``interpolation``: ``bilinear`` (continuous maps, features), ``bicubic``, or ``nearest``
        (labels, ids; required for integer maps).
        """
        h, w = self.input_hw
        if tuple(x.shape[-2:]) != (h, w):
            raise ValueError(f"uncrop expects (..., {h}, {w}) maps, got {tuple(x.shape)}")
        if not x.is_floating_point() and interpolation != "nearest":
            raise ValueError("integer maps must be uncropped with interpolation='nearest'")
        H, W = self.source_hw
        y0, x0, y1, x1 = self.box_in_original()
        cy0, cx0, cy1, cx1 = self.clipped_window()
        top, left = self.box[0], self.box[1]
        lead = x.shape[:-2]
        y = x.reshape(1, -1, h, w)[..., cy0 - top:cy1 - top, cx0 - left:cx1 - left]
        orig_dtype = y.dtype
        if not y.is_floating_point():
            y = y.double()
        if interpolation == "nearest":
            y = F.interpolate(y, size=(y1 - y0, x1 - x0), mode="nearest-exact")
        else:
            y = F.interpolate(y, size=(y1 - y0, x1 - x0), mode=interpolation, align_corners=False)
        pads = (x0, W - x1, y0, H - y1)  # left, right, top, bottom
        if any(pads):
            if fill is None:
                y = F.pad(y, pads, mode="replicate")
            else:
                y = F.pad(y, pads, mode="constant", value=float(fill))
        return self.unturn(y.to(orig_dtype).reshape(*lead, H, W))


def _round_to(v: float, m: int) -> int:
    return max(m, int(round(v / m)) * m)


class FramePreprocessor:
    """Resize and crop/pad frames to multiples of ``patch_size``; never rotates.

    Modes:
      * ``resize`` (default): width -> ``target_width``, height -> ``round(H * target_width / W / 14) * 14``,
        bicubic, nothing cropped: the network sees the whole frame (portrait 536x960 -> 518x924), so fields cover
        every original pixel. Landscape frames get the same input as ``crop``.
      * ``crop`` (the published StreamVGGT ``crop``): width -> ``target_width``, height ->
        ``round(H * target_width / W / 14) * 14`` (keeps the aspect up to the rounding), bicubic; a height above
        ``target_width`` (portrait) is centre-cropped to ``target_width``. 960x536 -> 518x294 (37x21 patches).
      * ``pad`` (published ``pad``): the longer side -> ``target_width``, the other rounded to a multiple of 14,
        then centred white padding to ``target_width`` x ``target_width``.
      * ``native``: no resize; each side centre-cropped down to a multiple of 14 (the published ``original``
        mode without its 90-degree rotation of landscape frames).
      * ``original`` (:data:`PUBLISHED_MODE`, the published inference path only): a landscape frame (W > H) is
        turned 90 degrees counter-clockwise, then as ``native`` (left = (W - W14) // 2, top = (H - H14) // 2).
        The record keeps ``rot90`` so every output is turned back onto the original pixels.
    """

    def __init__(self, target_width: int = 518, mode: str = "resize", patch_size: int = 14) -> None:
        if mode not in (*MODES, PUBLISHED_MODE):
            raise ValueError(f"unknown preprocessing mode {mode!r}; choose one of {', '.join(MODES)}")
        if mode not in ("native", PUBLISHED_MODE) and (target_width <= 0 or target_width % patch_size):
            raise ValueError(f"target width {target_width} must be a positive multiple of the patch size "
                             f"{patch_size} (e.g. 518 = 37 x 14)")
        self.target_width = int(target_width)
        self.mode = mode
        self.patch_size = int(patch_size)

    def plan(self, orig_hw: tuple[int, int]) -> CropInfo:
        """The :class:`CropInfo` for a frame of size ``orig_hw`` = (H, W), without touching pixels."""
        H, W = int(orig_hw[0]), int(orig_hw[1])
        p, t = self.patch_size, self.target_width
        if self.mode == PUBLISHED_MODE:
            rot = 1 if W > H else 0
            sh, sw = (W, H) if rot else (H, W)
            h, w = (sh // p) * p, (sw // p) * p
            if h == 0 or w == 0:
                raise ValueError(f"frame of {W}x{H} pixels is smaller than one {p}x{p} patch")
            return CropInfo(orig_hw=(H, W), resized_hw=(sh, sw), box=((sh - h) // 2, (sw - w) // 2, h, w),
                            mode=self.mode, rot90=rot)
        if self.mode in ("resize", "crop"):
            rh, rw = _round_to(H * (t / W), p), t
            if rh > t and self.mode == "crop":
                box = ((rh - t) // 2, 0, t, t)
            else:
                box = (0, 0, rh, rw)
        elif self.mode == "pad":
            if W >= H:
                rh, rw = _round_to(H * (t / W), p), t
            else:
                rh, rw = t, _round_to(W * (t / H), p)
            top, left = (t - rh) // 2, (t - rw) // 2
            box = (-top, -left, t, t)
        else:  # native
            h, w = (H // p) * p, (W // p) * p
            if h == 0 or w == 0:
                raise ValueError(f"frame of {W}x{H} pixels is smaller than one {p}x{p} patch")
            rh, rw = H, W
            top, left = (H - h) // 2, (W - w) // 2
            box = (top, left, h, w)
        return CropInfo(orig_hw=(H, W), resized_hw=(rh, rw), box=box, mode=self.mode)

    def prepare(self, rgb: np.ndarray) -> tuple[torch.Tensor, CropInfo]:
        """rgb: uint8 (H, W, 3) -> (float32 tensor (3, h, w) in [0, 1], CropInfo), h and w multiples of 14."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 (H, W, 3) frame, got {rgb.dtype} {rgb.shape}")
        info = self.plan(rgb.shape[:2])
        if info.rot90:
            rgb = np.rot90(rgb, info.rot90)  # counter-clockwise, as PIL's ROTATE_90
        rh, rw = info.resized_hw
        if (rh, rw) != tuple(rgb.shape[:2]):
            rgb = np.array(Image.fromarray(rgb).resize((rw, rh), Image.Resampling.BICUBIC))
        img = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
        y0, x0, y1, x1 = info.window
        cy0, cx0, cy1, cx1 = info.clipped_window()
        img = img[:, cy0:cy1, cx0:cx1]
        pads = (cx0 - x0, x1 - cx1, cy0 - y0, y1 - cy1)
        if any(pads):
            img = F.pad(img, pads, mode="constant", value=1.0)
        return img.contiguous(), info
