"""Metrics of the 4D LangSplat protocol.

Time-agnostic: IoU and pixel accuracy ``(TP + TN) / (H * W)`` per frame (our mAcc; the published code has
none). Time-sensitive: per-frame scores smoothed with ``[0.1, 0.8, 0.1]`` (end frames unsmoothed),
thresholded at the mean of the raw scores (``>=``), then Acc and vIoU.

Parity with the published ``eval.py`` (eval/README.md lists every case): the frame scores there are
``np.float32``, so the smoothing and the threshold (a Python ``sum(...) / n``) run in float32 (NumPy >= 2
scalar rules) and the threshold sums in the order of the COCO ``images`` list; both are reproduced here.
vIoU with no predicted and no annotated frame is 0, as published. IoU of two empty masks is 1 (the published
``0 / 0`` gives NaN, which would turn the query's and the scene's mIoU into NaN).
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
    """(T,) -> (T,) float32: 3-tap weighted smoothing over consecutive (sorted) frames; the two end frames are kept.

    As published: each weight is rounded to float32 and an inner frame is ``((s[i-1]*w0) + s[i]*w1) + s[i+1]*w2``
    with every product and sum rounded to float32.
    """
    s = np.asarray(scores, dtype=np.float32)
    out = s.copy()
    if len(s) >= 3:
        w0, w1, w2 = (np.float32(w) for w in weights)
        out[1:-1] = (s[:-2] * w0 + s[1:-1] * w1) + s[2:] * w2
    return out


def temporal_threshold(scores: Sequence[float] | np.ndarray) -> float:
    """Mean of the raw scores as published: float32 running sum in the given order, divided by n in float32.

    Pass the scores in the published loop order (the COCO ``images`` order); nan for no scores.
    """
    s = np.asarray(scores, dtype=np.float32)
    if s.size == 0:
        return float("nan")
    total = np.cumsum(s, dtype=np.float32)[-1]  # running (sequential) sum, unlike the pairwise np.sum
    return float(np.float32(total) / np.float32(s.size))


def temporal_predictions(scores: Sequence[float] | np.ndarray, weights: Sequence[float] = SMOOTH_WEIGHTS,
                         threshold: float | None = None) -> np.ndarray:
    """(T,) bool: smoothed score >= ``threshold`` (default :func:`temporal_threshold` of ``scores`` in this order)."""
    s = np.asarray(scores, dtype=np.float32)
    if len(s) == 0:
        return np.zeros(0, dtype=bool)
    thr = temporal_threshold(s) if threshold is None else threshold
    return smooth_scores(s, weights) >= np.float32(thr)


def temporal_accuracy(pred: Sequence[bool] | np.ndarray, label: Sequence[bool] | np.ndarray) -> float:
    """Fraction of frames whose prediction equals the label (nan for no frames)."""
    p, g = np.asarray(pred, dtype=bool), np.asarray(label, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction/label lengths differ: {p.shape} vs {g.shape}")
    return float("nan") if p.size == 0 else float((p == g).mean())


def video_iou(pred: Sequence[bool] | np.ndarray, label: Sequence[bool] | np.ndarray,
              frame_ious: Sequence[float] | np.ndarray) -> float:
    """vIoU = sum of ``frame_ious`` over frames in pred & label / number of frames in pred | label.

    0.0 when no frame is predicted or annotated, as the published ``evaluate_video_feature`` returns.
    """
    p, g = np.asarray(pred, dtype=bool), np.asarray(label, dtype=bool)
    ious = np.asarray(frame_ious, dtype=np.float64)
    if not (p.shape == g.shape == ious.shape):
        raise ValueError(f"lengths differ: pred {p.shape}, label {g.shape}, ious {ious.shape}")
    union = np.logical_or(p, g).sum()
    return 0.0 if union == 0 else float(ious[np.logical_and(p, g)].sum() / union)
