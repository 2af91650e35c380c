"""Video-depth scoring as the field's published scripts do it (PAGE-4D / CUT3R / MonST3R ``video_depth``).

One sequence is one set: every prediction is resized to the ground-truth size (OpenCV ``INTER_CUBIC``), the frames
are stacked to ``(N, H, W)``, and one alignment is fitted over all valid pixels of the sequence.

* valid pixels: ``0 < gt < max_depth`` (70 in the video-depth script);
* alignments (``ALIGN_MODES``):
    - ``scale&shift``: least absolute deviations ``min Σ|s·p + t − g|`` by Adam (lr 1e-4, at most 1,000 steps, stop
      when the loss measured *before* a step differs from the previous one by less than 1e-6, checked *after* the
      step); start ``s = median(g) / median(p)`` (torch's lower median), ``t = 0``; predictions below 1e-5 are set
      to 0 first; only finite predictions with ``g > 0`` enter the fit; with fewer than 10 the start is returned.
      Computed in the inputs' dtypes (float32 predictions), as the published code does.
    - ``scale``: 10 Weiszfeld (iteratively re-weighted least squares) steps from ``s = mean(g) / mean(p)``,
      weights ``1 / (|s·p − g| + 1e-8)``, ``s ← Σ w·p·g / Σ w·p²``, then ``s ≥ 1e-3``; in float64 (the published
      float32 result moves by up to ~4e-3 relative with the dtype, float64 is the stable figure).
    - ``median``: ``s = median(g) / median(p)`` (lower median).
    - ``metric``: none.
* the aligned prediction is clipped to at most ``clip_max`` when given (70 for Sintel; none for Bonn / TUM);
* metrics on the valid pixels: Abs Rel, Sq Rel, RMSE, log RMSE (prediction clamped to ≥ 1e-5), δ < 1.25^k.

``LAD_TOLERANCE`` (2e-4 relative): the LAD fit never converges in its 1,000 steps on real data and its result depends
on the exact step sequence. We run the published steps in the same order and dtypes, so the metrics match up to
floating-point summation order (~1e-6 relative, the float32 / float64 spread); one step more or fewer, when a near-tie
of the loss falls the other way, moves them by up to ~2e-4. Against the exact optimum, Adam's constant step (lr 1e-4)
leaves Abs Rel ≈ 3e-5 on an exact ``a·gt + b`` prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

ALIGN_MODES = ("scale&shift", "scale", "median", "metric")
#: the video-depth script's valid range (``max_depth``) and Sintel's clipping (``post_clip_max``)
MAX_DEPTH = 70.0
LAD_LR, LAD_MAX_ITERS, LAD_TOL, LAD_MIN_PIXELS = 1e-4, 1000, 1e-6, 10
LAD_ZERO_BELOW = 1e-5
WEISZFELD_STEPS, WEISZFELD_EPS, MIN_SCALE = 10, 1e-8, 1e-3
LOG_CLAMP = 1e-5
DELTA_THRESHOLDS = (1.25, 1.25 ** 2, 1.25 ** 3)
#: stated agreement of ``scale&shift`` metrics with the published code (relative; see the module docstring)
LAD_TOLERANCE = 2e-4
METRIC_KEYS = ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1", "delta_2", "delta_3")


def resize_to(pred: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(h, w) prediction -> (H, W) float32 by bicubic interpolation (OpenCV ``INTER_CUBIC``); unchanged if same size."""
    pred = np.asarray(pred, dtype=np.float32)
    if pred.shape == tuple(hw):
        return pred
    return cv2.resize(pred, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_CUBIC)


def fit_scale_shift(pred: torch.Tensor, gt: torch.Tensor, s_init: float, t_init: float = 0.0,
                    lr: float = LAD_LR, max_iters: int = LAD_MAX_ITERS, tol: float = LAD_TOL) -> tuple[float, float, int]:
    """Least-absolute-deviation ``s, t`` by Adam, in the published loop order.

    Args:
        pred, gt: (M,) the valid pixels (any float dtypes; ``s, t`` take ``pred``'s dtype).
    Returns:
        (s, t, steps taken).
    """
    ok = torch.isfinite(pred) & torch.isfinite(gt) & (gt > 0)
    if int(ok.sum()) < LAD_MIN_PIXELS:
        return float(s_init), float(t_init), 0
    p, g = pred[ok], gt[ok]
    s = torch.tensor([s_init], dtype=p.dtype, device=p.device, requires_grad=True)
    t = torch.tensor([t_init], dtype=p.dtype, device=p.device, requires_grad=True)
    opt = torch.optim.Adam([s, t], lr=lr)
    prev = None
    steps = 0
    for _ in range(max_iters):
        opt.zero_grad()
        loss = torch.sum(torch.abs(s * p + t - g))  # measured before the step
        loss.backward()
        opt.step()
        steps += 1
        if prev is not None and bool(torch.abs(prev - loss.detach()) < tol):
            break
        prev = loss.item()
    return s.detach().item(), t.detach().item(), steps


def fit_scale(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Weiszfeld scale (10 re-weighted least-squares steps from the ratio of means), in float64, ``≥ 1e-3``."""
    p, g = pred.double(), gt.double()
    s = torch.nanmean(g) / torch.nanmean(p)
    for _ in range(WEISZFELD_STEPS):
        w = 1.0 / ((s * p - g).abs() + WEISZFELD_EPS)
        s = torch.sum(w * p * g) / torch.sum(w * p ** 2)
    return float(s.clamp(min=MIN_SCALE))


def median_ratio(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """``median(g) / median(p)`` with torch's lower median (the published code's)."""
    return float(torch.median(gt) / torch.median(pred))


@dataclass
class DepthScore:
    """One sequence's depth result: ``metrics`` (contract keys + ``valid_pixels``; None values when nothing is
    valid), the fitted ``scale``/``shift``, the LAD step count, and ``error`` (N, H, W) float32 = the aligned,
    clipped prediction's ``|p − g| / g`` on valid pixels, NaN elsewhere."""

    metrics: dict
    scale: float
    shift: float
    lad_steps: int | None
    error: np.ndarray


def score_depth(pred: np.ndarray, gt: np.ndarray, align: str, max_depth: float | None = MAX_DEPTH,
                clip_max: float | None = None, device: str | torch.device = "cpu") -> DepthScore:
    """Score one sequence.

    Args:
        pred: (N, H, W) predictions already at the ground-truth size (float32, as the published resize leaves them).
        gt: (N, H, W) ground-truth depth (its reader's dtype: float32 for Sintel / ours, float64 for 16-bit PNGs);
            ≤ 0 = no ground truth.
        align: one of ``ALIGN_MODES``.
        max_depth: valid pixels have ``0 < gt < max_depth`` (None: ``gt > 0``).
        clip_max: clip the aligned prediction to at most this (None: no clipping).
        device: where the fit runs (the published script runs it on CUDA; ~1 s per LAD step for a 50-frame
            1024x436 Sintel sequence on two CPU cores, milliseconds on a GPU; summation order differs by ~1e-7).
    """
    if align not in ALIGN_MODES:
        raise ValueError(f"unknown alignment {align!r} (one of {ALIGN_MODES})")
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    P = torch.from_numpy(np.ascontiguousarray(pred)).to(device)
    G = torch.from_numpy(np.ascontiguousarray(gt)).to(device)
    mask = G > 0
    if max_depth is not None:
        mask &= G < max_depth
    p, g = P[mask], G[mask]
    n = int(mask.sum())
    s, t, steps = 1.0, 0.0, None
    error = np.full(gt.shape, np.nan, dtype=np.float32)
    if n == 0:
        return DepthScore({**{k: None for k in METRIC_KEYS}, "valid_pixels": 0}, s, t, steps, error)
    if align == "scale&shift":
        p = p.clone()
        p[p < LAD_ZERO_BELOW] = 0
        s_init = median_ratio(p, g)
        s, t, steps = fit_scale_shift(p, g, s_init)
        p = s * p + t
    elif align == "scale":
        s = fit_scale(p, g)
        p = s * p.double()
        g = g.double()
    elif align == "median":
        s = median_ratio(p, g)
        p = p * s
    if clip_max is not None:
        p = torch.clamp(p, max=clip_max)
    diff = p - g
    metrics = {
        "abs_rel": torch.mean(torch.abs(diff) / g).item(),
        "sq_rel": torch.mean(diff ** 2 / g).item(),
        "rmse": torch.sqrt(torch.mean(diff ** 2)).item(),
    }
    pc = torch.clamp(p, min=LOG_CLAMP)
    metrics["log_rmse"] = torch.sqrt(torch.mean((torch.log(pc) - torch.log(g)) ** 2)).item()
    ratio = torch.maximum(pc / g, g / pc)
    for i, thr in enumerate(DELTA_THRESHOLDS, 1):
        metrics[f"delta_{i}"] = torch.mean((ratio < thr).float()).item()
    metrics["valid_pixels"] = n
    error[mask.cpu().numpy()] = (torch.abs(diff) / g).float().cpu().numpy()
    return DepthScore(metrics, float(s), float(t), steps, error)


def weighted_average(rows: list[dict]) -> dict:
    """The dataset figure: each metric averaged over sequences weighted by their ``valid_pixels`` (sequences with
    none are left out); ``valid_pixels`` is the total. All None when no sequence has a valid pixel."""
    used = [r for r in rows if r.get("valid_pixels")]
    total = sum(int(r["valid_pixels"]) for r in used)
    out: dict = {}
    for k in METRIC_KEYS:
        out[k] = (float(np.average([r[k] for r in used], weights=[r["valid_pixels"] for r in used]))
                  if used else None)
    out["valid_pixels"] = total
    return out
