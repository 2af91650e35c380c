"""Geometry helpers for inference: crop mapping, camera conventions, unprojection, confidence filtering.

Conventions (OpenCV): x right, y down, z forward. Extrinsics are 3x4 ``[R | t]`` camera-from-world
(``X_cam = R @ X_world + t``); the world frame is the first frame's camera (StreamVGGT's convention).
Pixel coordinates are continuous with pixel ``i`` covering ``[i, i+1)``, so the centre of pixel
``(u, v)`` is ``(u + 0.5, v + 0.5)`` and the principal point of an unshifted W x H camera is
``(W/2, H/2)``, exactly VGGT's ``cx = W/2, cy = H/2``.

Crop mapping: the network sees a frame resized from (H, W) to (Hr, Wr) (per-axis scale
``sy = Hr/H, sx = Wr/W``) and then cropped to the box ``(top, left, h, w)`` in resized pixels.
A network pixel coordinate ``u_net`` maps to the original ``u = (u_net + left) / sx``.
Predictions are placed back on the original grid by resizing the (h, w) map to the box's size in
original pixels; pixels outside that box have no prediction: they are filled with the nearest edge
value (replicate padding) and marked invalid in a validity mask.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropBox:
    """Where the network input came from in the original frame.

    Attributes:
        orig_hw: (H, W) of the original frame.
        resized_hw: (Hr, Wr) after resizing (before cropping).
        box: (top, left, h, w) of the crop in resized pixels; (h, w) is the network input size.
    """

    orig_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    box: tuple[int, int, int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx) = resized / original."""
        return self.resized_hw[0] / self.orig_hw[0], self.resized_hw[1] / self.orig_hw[1]

    @property
    def net_hw(self) -> tuple[int, int]:
        return self.box[2], self.box[3]

    def clipped_window(self) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of the network window clipped to the resized image (pad mode reaches outside it)."""
        top, left, h, w = self.box
        rh, rw = self.resized_hw
        return max(top, 0), max(left, 0), min(top + h, rh), min(left + w, rw)

    def box_in_original(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of the predicted region in original pixels (rounded, clipped, non-empty)."""
        sy, sx = self.scale
        cy0, cx0, cy1, cx1 = self.clipped_window()
        H, W = self.orig_hw
        y0 = min(max(int(round(cy0 / sy)), 0), H - 1)
        x0 = min(max(int(round(cx0 / sx)), 0), W - 1)
        y1 = min(max(int(round(cy1 / sy)), y0 + 1), H)
        x1 = min(max(int(round(cx1 / sx)), x0 + 1), W)
        return y0, x0, y1, x1

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> CropBox:
        """Read ``to_dict()`` output or a ``preprocess.frames.CropInfo.to_dict()`` (same box convention)."""
        return cls(tuple(d["orig_hw"]), tuple(d["resized_hw"]), tuple(d["box"]))

    @classmethod
    def identity(cls, hw: tuple[int, int]) -> CropBox:
        return cls(tuple(hw), tuple(hw), (0, 0, hw[0], hw[1]))


def uncrop_map(x: torch.Tensor, crop: CropBox, mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Map network-resolution predictions back onto the original frame.

    Args:
        x: (..., h, w) map on the network input grid (any number of leading dims).
        crop: where that grid came from.
        mode: interpolation for the resize ("bilinear" or "nearest").
    Returns:
        (y (..., H, W) same dtype, valid (H, W) bool): inside the crop box the resized prediction,
        outside it the nearest edge value (replicate) and ``valid`` False.
    """
    if tuple(x.shape[-2:]) != tuple(crop.net_hw):
        raise ValueError(f"uncrop_map expects (..., {crop.net_hw[0]}, {crop.net_hw[1]}) maps, got {tuple(x.shape)}")
    H, W = crop.orig_hw
    y0, x0, y1, x1 = crop.box_in_original()
    top, left = crop.box[0], crop.box[1]
    cy0, cx0, cy1, cx1 = crop.clipped_window()
    lead = x.shape[:-2]
    flat = x.reshape(1, -1, *x.shape[-2:])[..., cy0 - top:cy1 - top, cx0 - left:cx1 - left]
    dtype = flat.dtype
    if not flat.is_floating_point():
        flat = flat.float()
        mode = "nearest"
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    inner = F.interpolate(flat, size=(y1 - y0, x1 - x0), mode=mode, **kwargs)
    pad = (x0, W - x1, y0, H - y1)
    if any(pad):
        inner = F.pad(inner, pad, mode="replicate")
    valid = torch.zeros(H, W, dtype=torch.bool, device=x.device)
    valid[y0:y1, x0:x1] = True
    return inner.to(dtype).reshape(*lead, H, W), valid


def intrinsics_to_original(K_net: np.ndarray, crop: CropBox) -> np.ndarray:
    """Intrinsics of the network input (h, w) -> intrinsics of the original (H, W) frame.

    Args:
        K_net: (..., 3, 3) pinhole intrinsics on the network input grid.
    Returns:
        (..., 3, 3) with ``fx/sx, fy/sy`` and the principal point shifted by the crop offset then
        scaled: ``cx = (cx_net + left) / sx``, ``cy = (cy_net + top) / sy`` (continuous pixels).
    """
    sy, sx = crop.scale
    top, left = crop.box[0], crop.box[1]
    K = np.array(K_net, dtype=np.float64, copy=True)
    K[..., 0, 0] /= sx
    K[..., 0, 1] /= sx
    K[..., 0, 2] = (K[..., 0, 2] + left) / sx
    K[..., 1, 1] /= sy
    K[..., 1, 2] = (K[..., 1, 2] + top) / sy
    return K


def invert_extrinsics(extr: np.ndarray) -> np.ndarray:
    """(..., 3, 4) camera-from-world -> (..., 3, 4) world-from-camera (and vice versa)."""
    R = extr[..., :3, :3]
    t = extr[..., :3, 3:]
    Rt = np.swapaxes(R, -1, -2)
    return np.concatenate([Rt, -Rt @ t], axis=-1)


def is_rotation(R: np.ndarray, atol: float = 1e-4) -> bool:
    """True when ``R`` (3, 3) is orthonormal with determinant +1 within ``atol``."""
    R = np.asarray(R, dtype=np.float64)
    return bool(R.shape == (3, 3) and np.allclose(R @ R.T, np.eye(3), atol=atol)
                and abs(np.linalg.det(R) - 1.0) < atol)


def pixel_rays(hw: tuple[int, int], K: np.ndarray) -> np.ndarray:
    """(H, W, 3) camera-frame rays ``K^-1 [u+0.5, v+0.5, 1]`` (z = 1) for every pixel centre."""
    H, W = hw
    v, u = np.meshgrid(np.arange(H, dtype=np.float64) + 0.5, np.arange(W, dtype=np.float64) + 0.5, indexing="ij")
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    return pix @ np.linalg.inv(np.asarray(K, dtype=np.float64)).T


def unproject_depth(depth: np.ndarray, K: np.ndarray, extr: np.ndarray) -> np.ndarray:
    """Depth map -> world points.

    Args:
        depth: (H, W) z-depth along the optical axis.
        K: (3, 3) intrinsics for that grid; extr: (3, 4) camera-from-world.
    Returns:
        (H, W, 3) float32 world points ``R^T (depth * ray - t)``.
    """
    cam = pixel_rays(depth.shape, K) * np.asarray(depth, dtype=np.float64)[..., None]
    R = np.asarray(extr, dtype=np.float64)[:3, :3]
    t = np.asarray(extr, dtype=np.float64)[:3, 3]
    return ((cam - t) @ R).astype(np.float32)


def project_points(xyz: np.ndarray, K: np.ndarray, extr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (N, 3) -> (pixel coordinates (N, 2) continuous, depth (N,)). Inverse of unproject."""
    extr = np.asarray(extr, dtype=np.float64)
    cam = np.asarray(xyz, dtype=np.float64) @ extr[:3, :3].T + extr[:3, 3]
    z = cam[:, 2]
    uv = (cam @ np.asarray(K, dtype=np.float64).T)[:, :2] / z[:, None]
    return uv, z


def confidence_mask(conf: np.ndarray, percentile: float = 0.0, min_conf: float = 0.0,
                    valid: np.ndarray | None = None) -> np.ndarray:
    """Keep pixels whose confidence is above ``min_conf`` and above the ``percentile``-th percentile.

    Args:
        conf: (H, W) confidence (StreamVGGT's is ``1 + exp(.)`` so always > 1).
        percentile: drop this percentage (0..100) of the lowest-confidence valid pixels.
        min_conf: absolute threshold.
        valid: optional (H, W) bool; invalid pixels are never kept.
    Returns:
        (H, W) bool.
    """
    if not 0.0 <= percentile < 100.0:
        raise ValueError(f"confidence percentile must be in [0, 100), got {percentile}")
    conf = np.asarray(conf)
    keep = np.isfinite(conf) & (conf >= min_conf)
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool)
    if percentile > 0 and keep.any():
        keep &= conf >= np.percentile(conf[keep], percentile)
    return keep


def frame_points(depth: np.ndarray, conf: np.ndarray, K: np.ndarray, extr: np.ndarray, rgb: np.ndarray,
                 valid: np.ndarray | None = None, percentile: float = 0.0, min_conf: float = 0.0,
                 stride: int = 1) -> dict[str, np.ndarray]:
    """Confidence-filtered coloured world points of one frame.

    Args:
        depth, conf: (H, W); rgb: (H, W, 3) uint8 colours; K (3, 3); extr (3, 4) camera-from-world.
        stride: keep every ``stride``-th pixel in each direction (subsampling).
    Returns:
        {"xyz": (N, 3) float32, "rgb": (N, 3) uint8, "conf": (N,) float32, "pix": (N, 2) int (row, col)}.
    """
    keep = confidence_mask(conf, percentile, min_conf, valid)
    if stride > 1:
        sub = np.zeros_like(keep)
        sub[::stride, ::stride] = True
        keep &= sub
    rows, cols = np.nonzero(keep)
    rays = pixel_rays(depth.shape, K)[rows, cols]
    cam = rays * np.asarray(depth, dtype=np.float64)[rows, cols][:, None]
    extr = np.asarray(extr, dtype=np.float64)
    xyz = ((cam - extr[:3, 3]) @ extr[:3, :3]).astype(np.float32)
    return {"xyz": xyz, "rgb": np.asarray(rgb)[rows, cols].astype(np.uint8),
            "conf": np.asarray(conf, dtype=np.float32)[rows, cols], "pix": np.stack([rows, cols], axis=1)}


def fov_intrinsics(fov_h: float, fov_w: float, hw: tuple[int, int]) -> np.ndarray:
    """VGGT intrinsics from field of view: ``fy = (H/2)/tan(fov_h/2)``, ``fx = (W/2)/tan(fov_w/2)``, centre principal point."""
    H, W = hw
    K = np.eye(3)
    K[0, 0] = (W / 2) / math.tan(fov_w / 2)
    K[1, 1] = (H / 2) / math.tan(fov_h / 2)
    K[0, 2], K[1, 2] = W / 2, H / 2
    return K


def camera_record(key: str, index: int, extr: np.ndarray, K: np.ndarray, hw: tuple[int, int]) -> dict:
    """One cameras.json entry: OpenCV camera-from-world 3x4 extrinsics and 3x3 intrinsics for (H, W)."""
    return {"key": key, "index": int(index), "height": int(hw[0]), "width": int(hw[1]),
            "extrinsics": np.asarray(extr, dtype=np.float64)[:3, :4].tolist(),
            "intrinsics": np.asarray(K, dtype=np.float64).tolist()}
