"""Exact 3D ground truth of a synthetic scene: HyperNeRF cameras, point tracks, optical flow, scene flow, moving masks.

Conventions (``docs/architecture.md`` §9): metres; OpenCV cameras; continuous pixel coordinates with pixel
``(row, col)`` covering ``[col, col+1) x [row, row+1)``, so its centre is ``(col + 0.5, row + 0.5)`` and the pixel
that contains a point ``[x, y]`` is ``(floor(y), floor(x))``.

A point is *visible* in a frame when it projects inside the image, in front of the camera, and the rendered depth
of the pixel that contains it agrees with its camera z within :data:`DEPTH_TOL` (relative); otherwise it is
*occluded* (TAP-Vid's flag). That one depth test is used for the tracks' ``occluded`` and for the flow's
occlusion mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .render import RenderedFrame, project, world_points
from .scene import MOVING_EPS, Scene

#: relative depth tolerance of the visibility test (|rendered depth - point z| <= DEPTH_TOL * z): the depth of a
#: slanted surface changes across a pixel, and a point is rarely at its pixel's centre
DEPTH_TOL = 0.02
#: track query grid: every GRID_OBJECT-th pixel (both axes) on objects, every GRID_BACKGROUND-th on the cloth,
#: pixel centres whose row and column are == GRID_OFFSET modulo the stride
GRID_OBJECT, GRID_BACKGROUND, GRID_OFFSET = 4, 8, 2


def query_frames(frames: int) -> list[int]:
    """Frames the tracks are queried on: the first and the middle one."""
    return sorted({0, frames // 2})


def hypernerf_camera(scene: Scene, t: int) -> dict:
    """HyperNeRF/Nerfies ``camera/<key>.json`` of frame t (for the frames as stored, rgb/2x, at scale 1):
    ``orientation`` = world-to-camera rotation (rows = camera axes in the world), ``position`` = camera centre."""
    extr = scene.extrinsics(t)
    K = scene.intrinsics
    return {
        "orientation": extr[:, :3].tolist(),
        "position": scene.camera_centre(t).tolist(),
        "focal_length": float(K[0, 0]),
        "principal_point": [float(K[0, 2]), float(K[1, 2])],
        "skew": 0.0,
        "pixel_aspect_ratio": 1.0,
        "radial_distortion": [0.0, 0.0, 0.0],
        "tangential_distortion": [0.0, 0.0],
        "image_size": [scene.config.width, scene.config.height],
    }


def visible(uv: np.ndarray, z: np.ndarray, depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The depth test: (N,) bool for points at pixel coordinates ``uv`` (N, 2) ``[x, y]`` with camera z ``z`` (N,)
    against a rendered ``depth`` (H, W) / ``valid`` (H, W)."""
    h, w = depth.shape
    finite = np.isfinite(uv).all(1) & np.isfinite(z)
    col = np.floor(np.where(finite, uv[:, 0], -1.0)).astype(np.int64)
    row = np.floor(np.where(finite, uv[:, 1], -1.0)).astype(np.int64)
    inside = finite & (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    rr, cc = np.where(inside, row, 0), np.where(inside, col, 0)
    d = depth[rr, cc].astype(np.float64)
    return inside & valid[rr, cc] & (np.abs(d - z) <= DEPTH_TOL * np.where(finite, z, 0.0))


@dataclass
class Queries:
    """The tracks' material points: query_points (N, 3) float32 ``[t, y, x]``; solid (N,) int (index in
    ``Scene.solids``, n = the table); unit (N, 3) float64 their unit-space coordinates."""

    query_points: np.ndarray
    solid: np.ndarray
    unit: np.ndarray


def make_queries(scene: Scene, frames: dict[int, RenderedFrame]) -> Queries:
    """Query points on :func:`query_frames`' grid (see :data:`GRID_OBJECT`), row-major per query frame."""
    qp, solid, unit = [], [], []
    for t in sorted(frames):
        fr = frames[t]
        h, w = fr.depth.shape
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        on_grid = (rows % GRID_OBJECT == GRID_OFFSET) & (cols % GRID_OBJECT == GRID_OFFSET)
        coarse = (rows % GRID_BACKGROUND == GRID_OFFSET) & (cols % GRID_BACKGROUND == GRID_OFFSET)
        table = fr.solid == len(scene.solids(t))
        keep = on_grid & fr.valid & (coarse | ~table)
        r, c = np.nonzero(keep)
        qp.append(np.stack([np.full(len(r), t, np.float64), r + 0.5, c + 0.5], axis=1))
        solid.append(fr.solid[r, c])
        unit.append(fr.unit[r, c])
    return Queries(np.concatenate(qp).astype(np.float32), np.concatenate(solid), np.concatenate(unit))


def track_frame(scene: Scene, t: int, queries: Queries, frame: RenderedFrame,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tracks at frame t: (xy (N, 2), occluded (N,), world (N, 3), camera (N, 3)), float64."""
    xyz = world_points(scene.solids(t), queries.solid, queries.unit)
    uv, cam = project(scene, t, xyz)
    return uv, ~visible(uv, cam[:, 2], frame.depth, frame.valid), xyz, cam


def motion(scene: Scene, t: int, frame: RenderedFrame, nxt: RenderedFrame) -> dict[str, np.ndarray]:
    """Forward motion of every pixel's 3D point from frame t to t + 1.

    Returns flow (H, W, 2) float32 pixels (``[dx, dy]``: where the point of pixel centre (col+.5, row+.5) projects
    at t + 1, minus that centre), flow_occluded (H, W) uint8 (1: not visible at t + 1 by the depth test, or no
    point), scene_flow (H, W, 3) float32 metres (world), moving (H, W) uint8 (1: the point travels more than
    :data:`MOVING_EPS` m). Pixels with nothing hit have zeros and flow_occluded 1.
    """
    h, w = frame.depth.shape
    idx = frame.solid.reshape(-1)
    x0 = frame.world.reshape(-1, 3)
    x1 = world_points(scene.solids(t + 1), idx, frame.unit.reshape(-1, 3))
    uv, cam = project(scene, t + 1, np.where(np.isfinite(x1), x1, 0.0))
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    hit = idx >= 0
    flow = np.where(hit[:, None], uv - np.stack([u.reshape(-1), v.reshape(-1)], axis=1), 0.0)
    sflow = np.where(hit[:, None], x1 - np.where(hit[:, None], x0, 0.0), 0.0)
    occ = ~(hit & visible(uv, cam[:, 2], nxt.depth, nxt.valid))
    moving = hit & (np.sqrt((sflow * sflow).sum(1)) > MOVING_EPS)
    return {"flow": flow.reshape(h, w, 2).astype(np.float32), "flow_occluded": occ.reshape(h, w).astype(np.uint8),
            "scene_flow": sflow.reshape(h, w, 3).astype(np.float32), "moving": moving.reshape(h, w).astype(np.uint8)}
