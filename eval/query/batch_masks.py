"""The mask post-processing of :mod:`eval.query.masks` for a batch of frames, smoothing only the chosen level.

:func:`eval.query.masks.masks_from_relevancy` smooths every level of a frame with the exact 29x29 ``avg_pool2d``
(bit for bit the published pool, the dominant CPU cost of a query once relevancy is cheap) although only the
chosen level's map is used afterwards; the others only contribute their maximum to the level choice.
:func:`frame_masks` gives the same result per frame (``torch.equal`` on the chosen level, mask, smoothed map
and score; tests/eval/test_query_grid.py) with about a third of the pooling:

1. every level's smoothed map is approximated with a separable pool (:func:`separable_smooth`: same windows,
   same ``count_include_pad=False`` divisors, ~10x cheaper, only rounded differently). The published pool sums
   at most k*k values in sequence, so the two differ by less than :func:`choice_margin` (a standard
   summation error bound, with room to spare). A level whose approximate maximum is more than two margins below
   the best one cannot be the chosen level;
2. when one level is left, it is the level :func:`eval.query.masks.choose_level` picks; otherwise (near ties) each
   remaining level's exact maximum is taken over the pixels that can reach the best level's lower bound, with
   :func:`eval.query.masks.smooth_relevancy` on their bounding box (plus the kernel's half width), and the level is
   chosen by :func:`eval.query.masks.choose_level` on those maxima (first on exact ties, as there);
3. the chosen levels of all frames are smoothed, normalised, thresholded and cleaned by :mod:`eval.query.masks` in
   one batch (each map is pooled on its own, so batching changes no bit).

For approximate relevancy (the latent grid: ``exact_ties=False``) step 2 is skipped and step 3 reuses the
chosen level's separable map from step 1 instead of the published pool (see :func:`frame_masks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from eval.query.masks import (
    CLEANUP_KERNEL,
    MASK_THRESHOLD,
    SMOOTH_KERNEL,
    choose_level,
    cleanup_mask,
    normalize_relevancy,
    smooth_relevancy,
)

_U = 2.0 ** -24  # float32 unit roundoff
FLAT_RANGE = 100.0  # with exact_pool=False, maps whose smoothed range is below this many choice margins (~2 % of
# their max) are smoothed with the published pool


@dataclass
class FrameMasks:
    """Per frame of a batch: level (B,) chosen index; smoothed (B, H, W) its smoothed relevancy (float32,
    as :func:`eval.query.masks.smooth_relevancy`); normalized (B, H, W) that map through
    :func:`eval.query.masks.normalize_relevancy`; raw / clean (B, H, W) bool masks before / after the 7x7 cleanup;
    scores (B,) max of the smoothed map (the chosen level's entry of ``LevelMasks.scores``); ties: frames whose
    level choice needed exact maxima (statistics)."""

    level: torch.Tensor
    smoothed: torch.Tensor
    normalized: torch.Tensor
    raw: torch.Tensor
    clean: torch.Tensor
    scores: torch.Tensor
    ties: int = 0


def separable_smooth(relevancy: torch.Tensor, kernel: int = SMOOTH_KERNEL) -> torch.Tensor:
    """(N, H, W) float32 -> (N, H, W): ``0.5 * (pool + R)`` with the pool as a 1 x k then k x 1 average
    (``count_include_pad=False``, which is separable: the window is a rectangle). Same windows and divisors as
    :func:`eval.query.masks.smooth_relevancy`, ~10x cheaper, but rounded in another order: within
    ``(2k + 4) * 2**-24 * max|R|`` of the exact mean instead of bit for bit the published pool."""
    p = kernel // 2
    y = F.avg_pool2d(relevancy[:, None], (1, kernel), 1, (0, p), count_include_pad=False)
    y = F.avg_pool2d(y, (kernel, 1), 1, (p, 0), count_include_pad=False)
    return 0.5 * (y[:, 0] + relevancy)


def choice_margin(max_abs: torch.Tensor, kernel: int = SMOOTH_KERNEL) -> torch.Tensor:
    """A bound (with a factor > 3 to spare) on |separable_smooth - smooth_relevancy| for maps with max |R| =
    ``max_abs``.

    Both are ``0.5 * (pool + R)`` with float32 pools of the same windows (u = 2**-24). The published pool sums
    n <= k*k terms in sequence (error <= (n - 1) u sum|x| <= (n - 1) u n max|R|) and divides by n (u): its mean
    is within k*k u max|R| of the true one. The separable pool sums <= k terms and divides, twice: within
    (2k + 2) u max|R|. The final addition rounds once more on each side: the two differ by less than
    ``(k*k + 2k + 4) u max|R|``; the margin is ``4 (k*k + 1) u max|R|``.
    """
    return 4.0 * (kernel * kernel + 1) * _U * max_abs.to(torch.float32)


def _exact_top(relevancy: torch.Tensor, pixels: torch.Tensor, kernel: int) -> torch.Tensor:
    """Max of :func:`eval.query.masks.smooth_relevancy` of a (H, W) map over the ``pixels`` (H, W) bool, smoothing only
    their bounding box plus the kernel's half width: each of those pixels keeps its whole (image-clipped) window
    inside that crop, so the pool sums the same values in the same order and gives the same float32 value."""
    p = kernel // 2
    h, w = relevancy.shape
    rows = torch.nonzero(pixels.any(dim=1)).flatten()
    cols = torch.nonzero(pixels.any(dim=0)).flatten()
    r0, r1 = max(int(rows[0]) - p, 0), min(int(rows[-1]) + p + 1, h)
    c0, c1 = max(int(cols[0]) - p, 0), min(int(cols[-1]) + p + 1, w)
    sm = smooth_relevancy(relevancy[r0:r1, c0:c1], kernel)
    return sm[pixels[r0:r1, c0:c1]].max()


def frame_masks(relevancy: torch.Tensor, threshold: float = MASK_THRESHOLD, level: int | None = None,
                smooth_kernel: int = SMOOTH_KERNEL, cleanup_kernel: int = CLEANUP_KERNEL,
                exact_ties: bool = True, exact_pool: bool | None = None) -> FrameMasks:
    """Chosen level and its masks for each frame of a (B, L, H, W) relevancy batch.

    Equal (bit for bit) to ``lm = eval.query.masks.masks_from_relevancy(relevancy[b], threshold)`` per frame:
    ``level[b] == lm.level`` (or ``level`` when given), ``smoothed[b] == lm.smoothed[level[b]]``, ``raw``/``clean``
    likewise, ``scores[b] == lm.scores[level[b]]``.

    ``exact_ties=False`` skips step 2: levels whose maxima are within :func:`choice_margin` (~2e-4 of the
    relevancy; below the float32 rounding of the pool in practice) are told apart by the separable pool's maxima
    (first on equal ones) instead of the published pool's. Only the level choice of such near ties can then
    differ from :func:`eval.query.masks.masks_from_relevancy`; the chosen level's masks are still exactly those of
    :mod:`eval.query.masks`. Meant for approximate relevancy (the latent grid), where ties that close are noise: on
    trained fields the levels of one object often tie, and resolving them exactly costs the published pool
    over most of the tied maps.

    ``exact_pool=False`` (the default when ``exact_ties=False``) also smooths the chosen level with the separable
    pool (the level choice has computed it already) instead of the published one: ``smoothed`` is then within
    :func:`choice_margin` of :func:`eval.query.masks.smooth_relevancy` (float32 rounding, ~1e-7 of the relevancy)
    rather than equal, and a mask pixel can change only where that rounding moves the normalised map across the
    threshold or the cleanup's count across half. Maps whose smoothed range is below ``FLAT_RANGE`` margins (flat
    or nearly, where the normalisation would magnify that rounding into masks) still take the published pool.
    For the latent grid, whose interpolated relevancy is itself ~1e-3 from the exact one, this adds nothing
    measurable to its disagreement with ``--exact`` (benchmarks/bench_query.py: 4 of 11.5 M mask pixels on the
    demo) and saves the published 29x29 pool, the largest cost of a grid query on a CPU.
    """
    if relevancy.dim() != 4:
        raise ValueError(f"expected (B, L, H, W) relevancy, got {tuple(relevancy.shape)}")
    b, n_levels, h, w = relevancy.shape
    rel = relevancy.float()
    exact_pool = exact_ties if exact_pool is None else exact_pool
    approx = None
    ties = 0
    if level is not None:
        if not 0 <= level < n_levels:
            raise ValueError(f"level {level} out of range for {n_levels} levels")
        chosen = torch.full((b,), int(level), dtype=torch.long)
    elif n_levels == 1:
        chosen = torch.zeros(b, dtype=torch.long)
    else:
        flat = rel.reshape(b * n_levels, h, w)
        approx = separable_smooth(flat, smooth_kernel).reshape(b, n_levels, h, w)
        top = approx.reshape(b, n_levels, -1).max(dim=-1).values  # (B, L)
        if exact_ties:
            margin = choice_margin(flat.abs().reshape(b, n_levels, -1).max(dim=-1).values, smooth_kernel)
            best_low = (top - margin).max(dim=1, keepdim=True).values
            candidate = (top + margin) >= best_low  # (B, L): may still be the chosen level
            chosen = candidate.to(torch.int8).argmax(dim=1)  # the only candidate where there is one
            for i in torch.nonzero(candidate.sum(dim=1) > 1).flatten().tolist():
                cands = torch.nonzero(candidate[i]).flatten().tolist()
                floor = float(best_low[i, 0])
                best = [_exact_top(rel[i, li], approx[i, li] + margin[i, li] >= floor, smooth_kernel)
                        for li in cands]
                chosen[i] = cands[choose_level(torch.stack(best)[:, None, None])]
                ties += 1
        else:
            chosen = top.argmax(dim=1)  # first on equal maxima
    if exact_pool:  # every frame's chosen level, exactly, in one batch (each map is pooled on its own)
        smoothed = smooth_relevancy(rel[torch.arange(b), chosen], smooth_kernel)
    else:
        picked = rel[torch.arange(b), chosen]
        smoothed = approx[torch.arange(b), chosen] if approx is not None else separable_smooth(picked, smooth_kernel)
        # (near-)flat maps: the min-max normalisation divides by their range and would turn the separable pool's
        # rounding into masks; those take the published pool (an all-equal map then stays an empty mask)
        flat_range = FLAT_RANGE * choice_margin(picked.abs().reshape(b, -1).amax(dim=1), smooth_kernel)
        span = smoothed.reshape(b, -1).amax(dim=1) - smoothed.reshape(b, -1).amin(dim=1)
        flat = torch.nonzero(span < flat_range).flatten()
        if flat.numel():
            smoothed = smoothed.clone()
            smoothed[flat] = smooth_relevancy(picked[flat], smooth_kernel)
    normalized = normalize_relevancy(smoothed)
    raw = normalized > threshold
    clean = cleanup_mask(raw, cleanup_kernel)
    scores = smoothed.reshape(b, -1).max(dim=1).values
    return FrameMasks(level=chosen, smoothed=smoothed, normalized=normalized, raw=raw, clean=clean, scores=scores,
                      ties=ties)
