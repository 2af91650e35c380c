"""The weight-free point tracker: OpenCV's pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``), run forwards
and backwards in time from each query frame, with a forward-backward consistency check for visibility.

For every step f -> f+1 (and f -> f-1 on the backward sweep), each point is tracked from its *anchor*, the last
frame where it was seen: normally the previous frame; after a loss, the frame where it was last visible, so that
a point coming back from behind an occluder is found again by its appearance rather than by what covered it. The
result is tracked back to the anchor; the point counts as visible when LK converged both ways, the round trip
lands within ``fb_threshold`` pixels of where it started, and the point is inside the frame. A lost point keeps
its last position (and ``occluded`` = True) until it is found again.

``confidence`` = exp(-(fb / fb_threshold)²) for a visible point (1 at the query frame), 0 for a lost one.
Positions use the project's pixel convention (``format.py``: pixel centres at i + 0.5).

Memory: the grey frames, T x H x W bytes (300 frames of 480 x 854: 123 MB), or a few of them when they come from a
disk-backed store (:mod:`inference.tracking.store`; ``python -m inference.track`` uses one above 1 GiB).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LKParams:
    """OpenCV LK settings: window (px; 15 as in OpenCV's lk_track sample, which scored 4 AJ points above 21 on the
    analytic test scenes), pyramid levels, iterations, convergence epsilon; the forward-backward
    threshold (px) and how many frames a lost point is searched for from its last visible frame."""

    window: int = 15
    levels: int = 3
    iterations: int = 30
    epsilon: float = 0.01
    fb_threshold: float = 1.0
    max_gap: int = 30

    def cv_kwargs(self) -> dict:
        return {"winSize": (self.window, self.window), "maxLevel": self.levels,
                "criteria": (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, self.iterations, self.epsilon)}


def to_gray(frames: Iterable[np.ndarray]) -> np.ndarray:
    """RGB uint8 frames (H, W, 3) -> (T, H, W) uint8 grey."""
    return np.stack([cv2.cvtColor(np.asarray(f), cv2.COLOR_RGB2GRAY) for f in frames])


def _lk(g0: np.ndarray, g1: np.ndarray, p0: np.ndarray, guess: np.ndarray, params: LKParams
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Track ``p0`` (M, 2) OpenCV coordinates from g0 to g1 starting at ``guess``, then back to g0.
    -> new positions (M, 2), ok (M,) bool, forward-backward error (M,)."""
    kw = params.cv_kwargs()
    p0 = np.ascontiguousarray(p0, np.float32).reshape(-1, 1, 2)
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(g0, g1, p0, np.ascontiguousarray(guess, np.float32).reshape(-1, 1, 2),
                                          flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **kw)
    pb, st2, _ = cv2.calcOpticalFlowPyrLK(g1, g0, p1, p0.copy(), flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **kw)
    fb = np.linalg.norm((pb - p0).reshape(-1, 2), axis=1)
    ok = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & np.isfinite(fb)
    return p1.reshape(-1, 2).astype(np.float64), ok, fb


def _sweep(gray: np.ndarray, order: Sequence[int], start: np.ndarray, xy: np.ndarray, params: LKParams,
           tracks: np.ndarray, occluded: np.ndarray, conf: np.ndarray, desc: str, progress: bool) -> None:
    """Track along the frame ``order``; point i enters at step ``start[i]`` at ``xy[i]`` (OpenCV coords) and
    writes tracks/occluded/conf at every later step (in place)."""
    h, w = gray.shape[1:]
    pos = xy.astype(np.float64).copy()
    anchor_step = start.copy()  # step index of each point's last visible frame
    anchor_xy = pos.copy()
    for s in tqdm(range(1, len(order)), desc=desc, unit="frame", disable=not progress, leave=False):
        live = np.flatnonzero(start < s)
        if live.size == 0:
            continue
        f = order[s]
        gap_ok = (s - anchor_step[live]) <= params.max_gap
        for a in np.unique(anchor_step[live[gap_ok]]):
            idx = live[gap_ok][anchor_step[live[gap_ok]] == a]
            p1, ok, fb = _lk(gray[order[a]], gray[f], anchor_xy[idx], pos[idx], params)
            inside = (p1[:, 0] >= -0.5) & (p1[:, 0] <= w - 0.5) & (p1[:, 1] >= -0.5) & (p1[:, 1] <= h - 0.5)
            good = ok & inside & (fb < params.fb_threshold)
            hit = idx[good]
            pos[hit] = p1[good]
            anchor_step[hit], anchor_xy[hit] = s, p1[good]
            conf[hit, f] = np.exp(-np.square(fb[good] / params.fb_threshold))
            occluded[hit, f] = False
        tracks[live, f] = pos[live]


def track_lk(gray: np.ndarray, queries: np.ndarray, params: LKParams | None = None, progress: bool = True
             ) -> dict[str, np.ndarray]:
    """Track query points through a video.

    Args:
        gray: (T, H, W) uint8 grey frames (an array, or any object indexed by frame with a .shape, such as
            :class:`inference.tracking.store.DiskFrames`).
        queries: (N, 3) ``[t, y, x]`` (t rounded to the nearest frame; project pixel convention).
    Returns:
        ``tracks`` (N, T, 2) [x, y], ``occluded`` (N, T) bool, ``confidence`` (N, T) float32.
    """
    params = params or LKParams()
    t_count = gray.shape[0]
    q = np.asarray(queries, np.float64)
    n = len(q)
    qf = np.round(q[:, 0]).astype(np.int64)
    xy = q[:, [2, 1]] - 0.5  # project convention -> OpenCV (pixel centres at integers)
    tracks = np.zeros((n, t_count, 2), np.float64)
    occluded = np.ones((n, t_count), bool)
    conf = np.zeros((n, t_count), np.float32)
    tracks[np.arange(n), qf] = xy
    occluded[np.arange(n), qf] = False
    conf[np.arange(n), qf] = 1.0
    forward = list(range(t_count))
    _sweep(gray, forward, qf, xy, params, tracks, occluded, conf, "LK forward", progress)
    backward = forward[::-1]
    _sweep(gray, backward, (t_count - 1) - qf, xy, params, tracks, occluded, conf, "LK backward", progress)
    return {"tracks": (tracks + 0.5).astype(np.float32), "occluded": occluded, "confidence": conf}
