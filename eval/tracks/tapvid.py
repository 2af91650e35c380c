"""The TAP-Vid metrics, as the published ``compute_tapvid_metrics`` defines them (DeepMind tapnet
``evaluation_datasets.py``; Meta CoTracker keeps a copy), for one video.

Definitions (N query points, T frames, positions already in the 256 x 256 raster, see :func:`to_256`):

* evaluated frames: the query frame is ``round(t)`` (numpy's round-half-to-even); mode ``first`` evaluates the
  frames strictly after it, mode ``strided`` every frame except it;
* ``occlusion_accuracy`` = #(evaluated, predicted occlusion == true occlusion) / #evaluated;
* a prediction is *within* x pixels when its squared distance to the ground truth is < x² (strict);
* ``pts_within_x`` = #(evaluated, visible, within) / #(evaluated, visible), occlusion predictions ignored;
* ``jaccard_x`` = TP / (#(evaluated, visible) + FP) with TP = #(evaluated, visible, within, predicted visible) and
  FP = #(evaluated, predicted visible, occluded or not within);
* ``average_pts_within_thresh`` and ``average_jaccard``: the plain means over x in 1, 2, 4, 8, 16.

Counts are summed over all points and frames of the video together (not averaged per track). A ratio whose
denominator is 0 (no evaluated frame, no visible point) is NaN, as in the published function; the JSON writer
turns it into ``null``. Values are fractions in [0, 1]; tables print them x 100.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = (1, 2, 4, 8, 16)
QUERY_MODES = ("first", "strided")
#: the metric names, in the published function's order
METRIC_NAMES = (("occlusion_accuracy",) + tuple(f"pts_within_{x}" for x in THRESHOLDS)
                + tuple(f"jaccard_{x}" for x in THRESHOLDS) + ("average_jaccard", "average_pts_within_thresh"))
RASTER = 256


def to_256(points_xy: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(..., 2) ``[x, y]`` pixels of an H x W frame -> the 256 x 256 raster TAP-Vid scores in (float64)."""
    h, w = image_size
    return np.asarray(points_xy, np.float64) * np.array([RASTER / w, RASTER / h])


def query_frames(query_points: np.ndarray) -> np.ndarray:
    """(N,) int: each query's frame, ``round(t)`` with numpy's half-to-even rounding."""
    return np.round(np.asarray(query_points, np.float64)[:, 0]).astype(np.int64)


def evaluated_frames(query_points: np.ndarray, num_frames: int, query_mode: str) -> np.ndarray:
    """(N, T) bool: the frames each query is scored on."""
    if query_mode not in QUERY_MODES:
        raise ValueError(f"unknown query mode {query_mode!r} (use {' or '.join(QUERY_MODES)})")
    qf = query_frames(query_points)
    if ((qf < 0) | (qf >= num_frames)).any():
        raise ValueError(f"query frames must lie in [0, {num_frames}); got {qf.min()}..{qf.max()}")
    t = np.arange(num_frames)[None, :]
    return t > qf[:, None] if query_mode == "first" else t != qf[:, None]


def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den else float("nan")


def tapvid_metrics(query_points: np.ndarray, gt_occluded: np.ndarray, gt_tracks: np.ndarray,
                   pred_occluded: np.ndarray, pred_tracks: np.ndarray, query_mode: str) -> dict[str, float]:
    """The TAP-Vid metrics of one video (definitions in the module docstring).

    query_points (N, 3) [t, y, x]; gt_occluded / pred_occluded (N, T) bool; gt_tracks / pred_tracks (N, T, 2)
    [x, y] in the 256 x 256 raster. Returns ``{name: float}`` for every name of :data:`METRIC_NAMES`.
    """
    gt_occ = np.asarray(gt_occluded, bool)
    pred_occ = np.asarray(pred_occluded, bool)
    n, t = gt_occ.shape
    ev = evaluated_frames(query_points, t, query_mode) if n else np.zeros((0, t), bool)
    vis, pred_vis = ~gt_occ, ~pred_occ
    out = {"occlusion_accuracy": _ratio(np.count_nonzero((gt_occ == pred_occ) & ev), np.count_nonzero(ev))}
    d2 = np.sum(np.square(np.asarray(pred_tracks, np.float64) - np.asarray(gt_tracks, np.float64)), axis=-1)
    n_vis = np.count_nonzero(vis & ev)
    within_all, jac_all = [], []
    for x in THRESHOLDS:
        near = d2 < x * x  # NaN positions are never near
        correct = near & vis & ev
        within = _ratio(np.count_nonzero(correct), n_vis)
        tp = np.count_nonzero(correct & pred_vis)
        fp = np.count_nonzero(pred_vis & ev & (gt_occ | ~near))
        jac = _ratio(tp, n_vis + fp)
        out[f"pts_within_{x}"], out[f"jaccard_{x}"] = within, jac
        within_all.append(within)
        jac_all.append(jac)
    out["average_jaccard"] = float(np.mean(jac_all))
    out["average_pts_within_thresh"] = float(np.mean(within_all))
    return {k: out[k] for k in METRIC_NAMES}


def zero_motion(query_points: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The zero-motion baseline: every point stays where it was queried and is always visible.
    -> tracks (N, T, 2) [x, y], occluded (N, T) bool."""
    q = np.asarray(query_points, np.float64)
    tracks = np.repeat(q[:, None, [2, 1]], num_frames, axis=1)
    return tracks, np.zeros(tracks.shape[:2], bool)
