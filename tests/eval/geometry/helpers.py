"""Small geometry folders in our inference output format (predictions and the synthetic world's gt/geometry)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from inference.geometry import camera_record
from inference.outputs import OutputLayout, write_depth
from utils.io import save_json_atomic


def trajectory(n: int, seed: int = 0) -> np.ndarray:
    """(n, 4, 4) camera-to-world poses that move and turn (non-degenerate for Sim(3) alignment)."""
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = Rotation.from_rotvec(rng.normal(size=(n, 3)) * 0.2).as_matrix()
    c2w[:, :3, 3] = np.cumsum(rng.normal(size=(n, 3)) * 0.3, axis=0)
    return c2w


def depth_maps(n: int, hw=(12, 16), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 8.0, size=(n,) + tuple(hw)).astype(np.float32)


def write_geometry(root: Path, depth: np.ndarray, c2w: np.ndarray, keys: list[str] | None = None,
                   valid: np.ndarray | None = None) -> list[str]:
    """Write ``root/geometry/`` (depth/<key>.safetensors + cameras.json) as inference does; returns the keys."""
    n, H, W = depth.shape
    keys = keys or [f"{i + 1:06d}" for i in range(n)]
    layout = OutputLayout(root)
    K = np.array([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]])
    records = []
    for i, key in enumerate(keys):
        w2c = np.linalg.inv(c2w[i])[:3, :4]  # camera-from-world, as inference stores
        v = torch.ones(H, W, dtype=torch.uint8) if valid is None else torch.from_numpy(valid[i].astype(np.uint8))
        write_depth(layout.depth(key), torch.from_numpy(np.ascontiguousarray(depth[i])), torch.ones(H, W), v,
                    w2c, K, {"frame_key": key})
        records.append(camera_record(key, i, w2c, K, (H, W)))
    save_json_atomic({"convention": "test", "frames": records}, layout.cameras)
    return keys


def sim3(c2w: np.ndarray, s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Apply the similarity x -> s R x + t to a camera-to-world trajectory (the camera axes turn with R)."""
    out = c2w.copy()
    out[:, :3, :3] = R @ c2w[:, :3, :3]
    out[:, :3, 3] = s * c2w[:, :3, 3] @ R.T + t
    return out
