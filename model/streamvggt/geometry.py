"""Geometry helpers: unprojecting StreamVGGT depth maps to camera / world points.

Conventions (as in the pose encoding, see ``model.streamvggt.pose``): extrinsics are camera-from-world 3x4
``[R | t]`` (OpenCV: x right, y down, z forward), intrinsics are pinhole 3x3 in pixels of the depth map, and pixel
(u, v) = (column, row) refers to the pixel's integer index (the reference implementation does not add 0.5).
"""

from __future__ import annotations

import torch

from model.streamvggt.pose import closed_form_inverse_se3


def pixel_grid(height: int, width: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Integer pixel coordinates (H, W, 2) as (u = column, v = row)."""
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype, device=device),
                          torch.arange(width, dtype=dtype, device=device), indexing="ij")
    return torch.stack([u, v], dim=-1)


def depth_to_cam_points(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Unproject depth (..., H, W) or (..., H, W, 1) with intrinsics (..., 3, 3) -> camera points (..., H, W, 3).

    ``X = (u - cx) / fx * z``, ``Y = (v - cy) / fy * z``, ``Z = z``.
    """
    if depth.shape[-1] == 1 and depth.dim() >= 3:
        depth = depth[..., 0]
    H, W = depth.shape[-2:]
    uv = pixel_grid(H, W, dtype=depth.dtype, device=depth.device)
    fx = intrinsics[..., 0, 0][..., None, None]
    fy = intrinsics[..., 1, 1][..., None, None]
    cx = intrinsics[..., 0, 2][..., None, None]
    cy = intrinsics[..., 1, 2][..., None, None]
    x = (uv[..., 0] - cx) / fx * depth
    y = (uv[..., 1] - cy) / fy * depth
    return torch.stack([x, y, depth], dim=-1)


def cam_to_world_points(points_cam: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """Camera points (..., H, W, 3) -> world points with camera-from-world extrinsics (..., 3, 4).

    ``X_world = R^T (X_cam - t)``.
    """
    cam_to_world = closed_form_inverse_se3(extrinsics[..., :3, :4])
    R = cam_to_world[..., :3, :3][..., None, None, :, :]
    t = cam_to_world[..., :3, 3][..., None, None, :]
    return (R @ points_cam[..., None])[..., 0] + t


def depth_to_world_points(depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Depth (..., H, W[, 1]) + extrinsics (..., 3, 4) + intrinsics (..., 3, 3) -> world points (..., H, W, 3)."""
    return cam_to_world_points(depth_to_cam_points(depth, intrinsics), extrinsics)


def world_to_cam_points(points_world: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """World points (..., H, W, 3) -> camera points (..., H, W, 3): ``R X + t``."""
    R = extrinsics[..., :3, :3][..., None, None, :, :]
    t = extrinsics[..., :3, 3][..., None, None, :]
    return (R @ points_world[..., None])[..., 0] + t


def project_points(points_cam: torch.Tensor, intrinsics: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Camera points (..., H, W, 3) -> pixel coordinates (..., H, W, 2) (u, v); z is clamped to >= eps."""
    z = points_cam[..., 2].clamp(min=eps)
    fx = intrinsics[..., 0, 0][..., None, None]
    fy = intrinsics[..., 1, 1][..., None, None]
    cx = intrinsics[..., 0, 2][..., None, None]
    cy = intrinsics[..., 1, 2][..., None, None]
    return torch.stack([points_cam[..., 0] / z * fx + cx, points_cam[..., 1] / z * fy + cy], dim=-1)
