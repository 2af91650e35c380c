"""Geometry helpers for inference: crop mapping, camera conventions, unprojection, confidence filtering.

Conventions (OpenCV): x right, y down, z forward. Extrinsics are 3x4 ``[R | t]`` camera-from-world
(``X_cam = R @ X_world + t``); the world frame is the first frame's camera (StreamVGGT's convention).
Pixel coordinates are continuous with pixel ``i`` covering ``[i, i+1)``, so the centre of pixel
``(u, v)`` is ``(u + 0.5, v + 0.5)`` and the principal point of an unshifted W x H camera is
``(W/2, H/2)``, exactly VGGT's ``cx = W/2, cy = H/2``.

Crop mapping (the record is :class:`preprocess.frames.CropInfo`): the network sees a frame resized from (H, W)
to (Hr, Wr) (per-axis scale ``sy = Hr/H, sx = Wr/W``) and then cropped to the box ``(top, left, h, w)`` in
resized pixels.
A network pixel coordinate ``u_net`` maps to the original ``u = (u_net + left) / sx``.
Predictions are placed back on the original grid by resizing the (h, w) map to the box's size in
original pixels; pixels outside that box have no prediction: they are filled with the nearest edge
value (replicate padding) and marked invalid in a validity mask.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from preprocess.crop import CropInfo
from preprocess.geometry_files import camera_record  # noqa: F401  (re-exported; its home is lower down)


def uncrop_map(x: torch.Tensor, crop: CropInfo, mode: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Map network-resolution predictions back onto the original frame (:meth:`CropInfo.uncrop`, replicate).

    Args:
        x: (..., h, w) map on the network input grid (any number of leading dims).
        crop: where that grid came from.
        mode: interpolation for the resize ("bilinear" or "nearest"); integer maps always use "nearest".
    Returns:
        (y (..., H, W) same dtype, valid (H, W) bool): inside the crop box the resized prediction,
        outside it the nearest edge value (replicate) and ``valid`` False.
    """
    y = crop.uncrop(x, fill=None, interpolation=mode if x.is_floating_point() else "nearest")
    return y, crop.valid_mask(device=x.device)


def intrinsics_to_original(K_net: np.ndarray, crop: CropInfo) -> np.ndarray:
    """Intrinsics of the network input (h, w) -> intrinsics of the original (H, W) frame.

    Args:
        K_net: (..., 3, 3) pinhole intrinsics on the network input grid.
    Returns:
        (..., 3, 3) with ``fx/sx, fy/sy`` and the principal point shifted by the crop offset then
        scaled: ``cx = (cx_net + left) / sx``, ``cy = (cy_net + top) / sy`` (continuous pixels).
    """
    sx, sy = crop.scale_xy
    top, left = crop.box[0], crop.box[1]
    K = np.array(K_net, dtype=np.float64, copy=True)
    K[..., 0, 0] /= sx
    K[..., 0, 1] /= sx
    K[..., 0, 2] = (K[..., 0, 2] + left) / sx
    K[..., 1, 1] /= sy
    K[..., 1, 2] = (K[..., 1, 2] + top) / sy
    if crop.rot90 % 4 == 1:  # intrinsics of the turned frame -> of the original (W = original width)
        turned = K.copy()
        W = float(crop.orig_hw[1])
        K[..., 0, 0], K[..., 1, 1] = turned[..., 1, 1], turned[..., 0, 0]
        K[..., 0, 1] = 0.0
        K[..., 0, 2], K[..., 1, 2] = W - turned[..., 1, 2], turned[..., 0, 2]
    return K


#: camera-frame rotation from an original camera to the same camera after a quarter turn of its image
#: (counter-clockwise): X' = Y, Y' = -X, Z' = Z
_TURN = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def extrinsics_to_original(extr: np.ndarray, crop: CropInfo) -> np.ndarray:
    """Camera-from-world (..., 3, 4) predicted on a turned frame (``crop.rot90``) -> the original frame's cameras,
    with the world = the first original camera (as everywhere). Identity without ``rot90``."""
    extr = np.array(extr, dtype=np.float64, copy=True)
    if crop.rot90 % 4 == 0:
        return extr
    if crop.rot90 % 4 != 1:
        raise ValueError(f"rot90={crop.rot90} is not supported (0 or 1)")
    out = extr.copy()
    out[..., :3, :3] = _TURN.T @ extr[..., :3, :3] @ _TURN
    out[..., :3, 3] = (extr[..., :3, 3] @ _TURN)  # = TURN^T t for row vectors
    return out


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
