"""TAPVid-3D's metrics for 3D tracks (tapnet ``tapvid3d/evaluation/metrics.py``, ``compute_tapvid3d_metrics``),
with its default conventions:

* positions are in the **camera** frame of each time step (``tracks_camera`` (N, T, 3), z = depth);
* scale alignment ``median`` (the published default): the prediction is multiplied by
  median(|gt|) / median(|pred|), the medians of the point norms over the (point, frame) pairs visible in both
  the ground truth and the prediction; ``none`` keeps the prediction as it is (metric predictions);
* depth-adaptive thresholds: a point is within x when |pred - gt|² < (x · z_gt / sqrt(fx · fy))², x in 1..16
  (the 2D pixel threshold back-projected at the true depth);
* every frame is evaluated (no query-frame exclusion, unlike the 2D protocol);
* ``apd_3d`` is ``average_pts_within_thresh`` (APD, the TAPVid-3D headline number), beside ``average_jaccard``
  (3D-AJ) and ``occlusion_accuracy``.
"""

from __future__ import annotations

import numpy as np

from eval.tracks.tapvid import THRESHOLDS

SCALINGS = ("median", "none")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def apd3d(gt_cam: np.ndarray, pred_cam: np.ndarray, gt_occluded: np.ndarray, pred_occluded: np.ndarray,
          focal: tuple[float, float], scaling: str = "median") -> dict[str, float]:
    """gt_cam, pred_cam (N, T, 3) camera-frame points; occlusions (N, T) bool; focal (fx, fy) pixels."""
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r} (use {' or '.join(SCALINGS)})")
    gt, pred = np.asarray(gt_cam, np.float64), np.asarray(pred_cam, np.float64)
    g_occ, p_occ = np.asarray(gt_occluded, bool), np.asarray(pred_occluded, bool)
    if scaling == "median":
        both = ~(g_occ | p_occ)
        g_norm = np.sqrt(np.maximum(1e-12, np.sum(gt * gt, axis=-1)))[both]
        p_norm = np.sqrt(np.maximum(1e-12, np.sum(pred * pred, axis=-1)))[both]
        scale = float(np.median(g_norm) / np.median(p_norm)) if both.any() else float("nan")
        pred = pred * scale
    vis, p_vis = ~g_occ, ~p_occ
    n_all = g_occ.size
    out = {"occlusion_accuracy": _ratio(np.count_nonzero(g_occ == p_occ), n_all)}
    d2 = np.sum(np.square(pred - gt), axis=-1)
    unit = gt[..., 2] / np.sqrt(float(focal[0]) * float(focal[1]))
    n_vis = np.count_nonzero(vis)
    within, jac = [], []
    for x in THRESHOLDS:
        near = d2 < np.square(x * unit)
        correct = near & vis
        w = _ratio(np.count_nonzero(correct), n_vis)
        j = _ratio(np.count_nonzero(correct & p_vis), n_vis + np.count_nonzero(p_vis & (g_occ | ~near)))
        out[f"pts_within_{x}"], out[f"jaccard_{x}"] = w, j
        within.append(w)
        jac.append(j)
    out["average_jaccard"] = float(np.mean(jac))
    out["average_pts_within_thresh"] = float(np.mean(within))
    out["apd_3d"] = out["average_pts_within_thresh"]
    return out
