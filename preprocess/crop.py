"""The crop record: how a frame becomes the network input, and how predictions go back onto its pixels.

:class:`FramePreprocessor` resizes and crops/pads each frame to multiples of the patch size (14), or turns and
crops it as the published inference does, and returns a :class:`CropInfo` that records exactly what was done;
:meth:`CropInfo.uncrop` (and ``inference.geometry`` for intrinsics) map predictions on the network grid back onto
the original pixels. This is the one crop record of the project: token extraction stores it in the token cache,
training aligns targets with it, inference maps fields back with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MODES = ("resize", "crop", "pad", "native")
#: the published 4DLangVGGT inference mode: landscape frames turned 90 degrees counter-clockwise, each side
#: centre-cropped to a multiple of 14, no resize (``inference.run --preset published`` only: a frame turned
#: for the network is turned back in every output, so the fields still lie on the original pixels)
PUBLISHED_MODE = "original"


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


def pad_to_common_size(images: list[torch.Tensor]) -> torch.Tensor:
    """Stack (3, h, w) images; when their sizes differ, white-pad each, centred (floor half at top/left), to the
    largest height and width, as the official VGGT / PAGE-4D / StreamVGGT loaders do. -> (N, 3, H, W)."""
    if not images:
        raise ValueError("no images to stack")
    hmax = max(int(t.shape[-2]) for t in images)
    wmax = max(int(t.shape[-1]) for t in images)
    out = []
    for t in images:
        dh, dw = hmax - int(t.shape[-2]), wmax - int(t.shape[-1])
        if dh or dw:
            t = F.pad(t, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="constant", value=1.0)
        out.append(t)
    return torch.stack(out)


def preprocess_images(rgbs: list[np.ndarray], mode: str = "crop", target_width: int = 518) -> torch.Tensor:
    """The official ``load_and_preprocess_images`` on decoded frames (``preprocess.frames.read_frame_published``
    decodes as it does): each frame through :class:`FramePreprocessor` (``crop`` or ``pad``), then
    :func:`pad_to_common_size`. -> float32 (N, 3, H, W) in [0, 1]."""
    if mode not in ("crop", "pad"):
        raise ValueError(f"the official loader has modes 'crop' and 'pad', not {mode!r}")
    prep = FramePreprocessor(target_width, mode)
    return pad_to_common_size([prep.prepare(rgb)[0] for rgb in rgbs])
