"""2D tracks -> 3D tracks with depth maps and cameras (predicted by ``inference.run``, or a scene's ground truth
in the same format: ``geometry/depth/<key>.safetensors`` with depth (H, W), extrinsics 3x4 camera-from-world and
intrinsics 3x3 for continuous pixel coordinates, pixel centres at i + 0.5).

A track point (x, y) at frame f gets the depth d of frame f at (x, y) (bilinear over the four nearest pixel
centres, clamped at the border), its camera-frame point d · K⁻¹ [x, y, 1] and its world point R^T (X_cam - t).
Occluded points are lifted too (their depth is that of whatever covers them) and keep their ``occluded`` flag.
Frames are read one at a time, so memory stays one depth map.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inference.outputs import read_depth
from utils.cli import UserError


def sample_bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(H, W) map at (M, 2) [x, y] continuous positions (pixel centres at i + 0.5) -> (M,) float64."""
    h, w = image.shape
    u = np.clip(np.asarray(xy[:, 0], np.float64) - 0.5, 0, w - 1)
    v = np.clip(np.asarray(xy[:, 1], np.float64) - 0.5, 0, h - 1)
    u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    a, b = u - u0, v - v0
    img = np.asarray(image, np.float64)
    return ((1 - a) * (1 - b) * img[v0, u0] + a * (1 - b) * img[v0, u1]
            + (1 - a) * b * img[v1, u0] + a * b * img[v1, u1])


def lift_frame(xy: np.ndarray, depth: np.ndarray, K: np.ndarray, extr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) pixels of one frame -> (camera-frame (M, 3), world (M, 3)) float64."""
    d = sample_bilinear(depth, xy)
    pix = np.concatenate([np.asarray(xy, np.float64), np.ones((len(xy), 1))], axis=1)
    cam = (pix @ np.linalg.inv(np.asarray(K, np.float64)).T) * d[:, None]
    R, t = np.asarray(extr, np.float64)[:3, :3], np.asarray(extr, np.float64)[:3, 3]
    return cam, (cam - t) @ R


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def geometry_files(geometry: str | os.PathLike, keys: Sequence[str] | None = None) -> list[Path]:
    """The depth files of a geometry folder (``<dir>/depth/*.safetensors``; ``<dir>`` may also be the inference
    output holding ``geometry/``), one per frame: the files of ``keys`` when all exist, else every file in
    cameras.json order (or natural name order)."""
    root = Path(geometry)
    if (root / "geometry" / "depth").is_dir():
        root = root / "geometry"
    depth_dir = root / "depth"
    if not depth_dir.is_dir():
        raise UserError("no depth/ folder in the geometry folder", root,
                        "pass --geometry <out>/geometry (inference.run) or <scene>/gt/geometry")
    if keys is not None and all((depth_dir / f"{k}.safetensors").is_file() for k in keys):
        return [depth_dir / f"{k}.safetensors" for k in keys]
    cams = root / "cameras.json"
    if cams.is_file():
        order = [str(r["key"]) for r in json.loads(cams.read_text()).get("frames", [])]
        files = [depth_dir / f"{k}.safetensors" for k in order]
        if files and all(f.is_file() for f in files):
            return files
    return sorted(depth_dir.glob("*.safetensors"), key=lambda p: _natural(p.stem))


def lift_tracks(tracks: np.ndarray, depth_files: Sequence[Path], image_size: tuple[int, int] | None = None
                ) -> dict[str, np.ndarray]:
    """tracks (N, T, 2) [x, y] -> ``tracks_camera`` and ``tracks_world`` (N, T, 3) float32, reading frame f's
    depth and cameras from ``depth_files[f]``; a depth map of another size than ``image_size`` [H, W] is refused."""
    n, t_count = tracks.shape[:2]
    if len(depth_files) != t_count:
        raise UserError(f"the geometry has {len(depth_files)} frames but the tracks {t_count}",
                        depth_files[0].parent if depth_files else None,
                        "give the geometry of the same video (all its frames)")
    cam_out = np.zeros((n, t_count, 3), np.float64)
    world_out = np.zeros((n, t_count, 3), np.float64)
    for f, path in enumerate(depth_files):
        d, _ = read_depth(path, names=("depth", "extrinsics", "intrinsics"))
        depth = d["depth"].numpy()
        if image_size is not None and tuple(depth.shape) != tuple(image_size):
            raise UserError(f"depth map {depth.shape} but frames {tuple(image_size)}", path,
                            "give the geometry computed for these frames (same resolution)")
        cam_out[:, f], world_out[:, f] = lift_frame(tracks[:, f], depth, d["intrinsics"].numpy(),
                                                    d["extrinsics"].numpy())
    return {"tracks_camera": cam_out.astype(np.float32), "tracks_world": world_out.astype(np.float32)}
