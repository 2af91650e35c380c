"""The geometry file format (one home): per-frame depth + camera files and ``cameras.json``.

Written by inference (``<out>/geometry/``, predicted) and by the synthetic scene generator (``<scene>/gt/geometry/``,
exact), read by everything that consumes geometry (viewer, PLY export, lifting, evaluation), so it lives below
both (``docs/architecture.md`` §2, §9).

- ``depth/<key>.safetensors``: ``depth`` (H, W) float32 camera z (metres for ground truth; the backbone's units
  for predictions), ``conf`` (H, W) float32, ``valid`` (H, W) uint8, ``extrinsics`` (3, 4) float64 OpenCV
  camera-from-world, ``intrinsics`` (3, 3) float64; metadata: JSON-encoded strings (frame_key, frame_index, ...).
- ``cameras.json``: ``{"convention": str, "frames": [camera_record(...), ...]}`` (+ ``"ground_truth": true`` for
  the generator's).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from model.safe_load import open_safetensors
from utils.io import save_safetensors_atomic

CAMERA_CONVENTION = ("OpenCV: x right, y down, z forward; extrinsics are 3x4 [R|t] camera-from-world "
                     "(X_cam = R X_world + t), world = first frame's camera; intrinsics are for the "
                     "original frame resolution, continuous pixel coordinates (pixel centres at i+0.5)")


def encode_meta(meta: dict) -> dict[str, str]:
    """safetensors metadata (str -> str) from a dict: every value JSON-encoded."""
    return {k: json.dumps(v) for k, v in meta.items()}


def decode_meta(meta: dict[str, str] | None) -> dict:
    """Inverse of :func:`encode_meta` (values that are not JSON are kept as strings)."""
    out = {}
    for k, v in (meta or {}).items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def write_depth(path: str | os.PathLike, depth: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor,
                extrinsics: np.ndarray, intrinsics: np.ndarray, meta: dict) -> None:
    """Write depth (H, W), conf (H, W), valid (H, W) and this frame's camera (3x4, 3x3) atomically."""
    save_safetensors_atomic({
        "depth": depth.detach().float().cpu(), "conf": conf.detach().float().cpu(),
        "valid": valid.to(torch.uint8).cpu(),
        "extrinsics": torch.as_tensor(np.asarray(extrinsics, dtype=np.float64)),
        "intrinsics": torch.as_tensor(np.asarray(intrinsics, dtype=np.float64)),
    }, path, metadata=encode_meta(meta))


def read_depth(path: str | os.PathLike, names: tuple[str, ...] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a depth file written by :func:`write_depth`: ({name: tensor}, decoded metadata); ``names`` limits which
    tensors load."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"fields file {path} not found; run `python -m inference.run` first")
    with open_safetensors(path, "run inference again (it rewrites damaged frames with --overwrite) or remove "
                                "the file") as f:
        meta = decode_meta(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys() if names is None or k in names}
    return tensors, meta


def camera_record(key: str, index: int, extr: np.ndarray, K: np.ndarray, hw: tuple[int, int]) -> dict:
    """One cameras.json entry: OpenCV camera-from-world 3x4 extrinsics and 3x3 intrinsics for (H, W)."""
    return {"key": key, "index": int(index), "height": int(hw[0]), "width": int(hw[1]),
            "extrinsics": np.asarray(extr, dtype=np.float64)[:3, :4].tolist(),
            "intrinsics": np.asarray(K, dtype=np.float64).tolist()}
