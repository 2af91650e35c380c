"""Dense-motion metrics: optical-flow end-point error and moving-mask IoU.

* ``epe_all``: the mean over every pixel of every flow frame of ``||flow_pred - flow_gt||`` (pixels, lower is
  better); ``epe_noc``: the same over the pixels the ground truth marks as not occluded (visible in the next frame).
* Moving-mask IoU per frame: |pred ∧ gt| / |pred ∨ gt|; a frame where both masks are empty has no IoU (``None``
  in the per-frame list) and is left out of ``mask_iou`` (the mean over the frames that have one), so an
  all-static prediction gains nothing from static frames.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def flow_epe(pred: np.ndarray, gt: np.ndarray, occluded: np.ndarray | None = None) -> dict[str, float]:
    """pred, gt (F, H, W, 2) [dx, dy] pixels; occluded (F, H, W) bool or None -> ``{epe_all, epe_noc}``."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 4 or pred.shape[-1] != 2:
        raise ValueError(f"flows must both be (F, H, W, 2), not {pred.shape} and {gt.shape}")
    err = np.sqrt(np.sum(np.square(pred - gt), axis=-1))
    out = {"epe_all": float(err.mean()) if err.size else float("nan")}
    if occluded is None:
        out["epe_noc"] = out["epe_all"]
    else:
        keep = ~np.asarray(occluded, bool)
        if keep.shape != err.shape:
            raise ValueError(f"flow occlusion must be {err.shape}, not {keep.shape}")
        out["epe_noc"] = float(err[keep].mean()) if keep.any() else float("nan")
    return out


def mask_ious(pred: np.ndarray, gt: np.ndarray) -> list[float | None]:
    """pred, gt (T, H, W) bool -> the IoU of each frame (None where both masks are empty)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"masks must both be (T, H, W), not {pred.shape} and {gt.shape}")
    inter = np.count_nonzero(pred & gt, axis=(1, 2))
    union = np.count_nonzero(pred | gt, axis=(1, 2))
    return [float(i) / float(u) if u else None for i, u in zip(inter, union, strict=True)]


def mean_iou(per_frame: list[float | None]) -> float:
    """The mean of the defined per-frame IoUs (NaN when none is)."""
    vals = [v for v in per_frame if v is not None]
    return float(np.mean(vals)) if vals else float("nan")


def read_world_motion(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """The synthetic world's ``gt/motion/<key>.safetensors`` files (frames 0 .. T-2, from t to t + 1) as arrays:
    ``flow`` (T-1, H, W, 2) float32, ``occluded`` (T-1, H, W) bool (``flow_occluded``) and ``masks``
    (T-1, H, W) bool (``moving``), in the layouts ``python -m eval.tracks`` reads (docs/architecture.md §9)."""
    from model.safe_load import open_safetensors

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no motion files in {folder}")
    flow, occluded, masks = [], [], []
    for f in files:
        with open_safetensors(f) as z:
            flow.append(z.get_tensor("flow").numpy())
            occluded.append(z.get_tensor("flow_occluded").numpy() != 0)
            masks.append(z.get_tensor("moving").numpy() != 0)
    return {"flow": np.stack(flow), "occluded": np.stack(occluded), "masks": np.stack(masks)}
