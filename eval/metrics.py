"""Metrics of the 4D LangSplat protocol.

Time-agnostic: IoU and pixel accuracy ``(TP + TN) / (H * W)`` per frame (our mAcc; the published code has
none). Time-sensitive: per-frame scores smoothed with ``[0.1, 0.8, 0.1]`` (end frames unsmoothed),
thresholded at the mean of the raw scores (``>=``), then Acc and vIoU.
Conventions for empty sets (not covered by the published code): IoU of two empty masks = 1; vIoU with no
predicted and no annotated frame = 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

SMOOTH_WEIGHTS = (0.1, 0.8, 0.1)


def _np_bool(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu").numpy()
    return np.asarray(x).astype(bool)


def mask_iou(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> float:
    """|pred & gt| / |pred | gt| for (H, W) masks; 1.0 when both are empty."""
    p, g = _np_bool(pred), _np_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, g).sum() / union)


def pixel_accuracy(pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> float:
    """(TP + TN) / (H * W) for (H, W) masks."""
    p, g = _np_bool(pred), _np_bool(gt)
    if p.shape != g.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {g.shape}")
    return float((p == g).mean())


def smooth_scores(scores: Sequence[float] | np.ndarray, weights: Sequence[float] = SMOOTH_WEIGHTS) -> np.ndarray:
    """(T,) -> (T,): 3-tap weighted smoothing over consecutive (sorted) frames; the two end frames are kept."""
    s = np.asarray(scores, dtype=np.float64)
    out = s.copy()
    if len(s) >= 3:
        w0, w1, w2 = weights
        out[1:-1] = w0 * s[:-2] + w1 * s[1:-1] + w2 * s[2:]
    return out


def temporal_predictions(scores: Sequence[float] | np.ndarray,
                         weights: Sequence[float] = SMOOTH_WEIGHTS) -> np.ndarray:
    """(T,) bool: smoothed score >= mean of the raw scores."""
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return np.zeros(0, dtype=bool)
    return smooth_scores(s, weights) >= s.mean()


def temporal_accuracy(pred: Sequence[bool] | np.ndarray, label: Sequence[bool] | np.ndarray) -> float:
    """Fraction of frames whose prediction equals the label (nan for no frames)."""
    p, g = np.asarray(pred, dtype=bool), np.asarray(label, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction/label lengths differ: {p.shape} vs {g.shape}")
    return float("nan") if p.size == 0 else float((p == g).mean())


def video_iou(pred: Sequence[bool] | np.ndarray, label: Sequence[bool] | np.ndarray,
              frame_ious: Sequence[float] | np.ndarray) -> float:
    """vIoU = sum of ``frame_ious`` over frames in pred & label / number of frames in pred | label (1.0 if none)."""
    p, g = np.asarray(pred, dtype=bool), np.asarray(label, dtype=bool)
    ious = np.asarray(frame_ious, dtype=np.float64)
    if not (p.shape == g.shape == ious.shape):
        raise ValueError(f"lengths differ: pred {p.shape}, label {g.shape}, ious {ious.shape}")
    union = np.logical_or(p, g).sum()
    return 1.0 if union == 0 else float(ious[np.logical_and(p, g)].sum() / union)
