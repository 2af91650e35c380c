"""Relevancy -> binary mask post-processing and level choice (4D LangSplat ``activate_stream``).

Per level: ``R <- 0.5 * (AvgPool(29, stride 1, pad 14, count_include_pad=False)(R) + R)``; min-max
normalise to [0, 1], map to [-1, 1], clip to [0, 1]; threshold ``> 0.4``; clean with a 7x7 average
(``count_include_pad=False``) ``> 0.5``. The chosen level is the one whose smoothed map has the highest max.
Every step runs in float32 with the published operations and order, so the masks equal the published ones
bit for bit on the same device (the pools are single 2-D ``avg_pool2d`` calls, see :func:`_pool`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SMOOTH_KERNEL = 29
MASK_THRESHOLD = 0.4
CLEANUP_KERNEL = 7


def _pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """Same-size k x k average pool of (..., H, W), float32, with ``count_include_pad=False``.

    One 2-D ``avg_pool2d`` call, so the result is bit for bit that of the published
    ``torch.nn.AvgPool2d(k, stride=1, padding=k // 2, count_include_pad=False)``: each output is the float32
    sum of its window in row-major order divided by the valid count. A separable (k x 1 then 1 x k) pool is
    ~10x cheaper on CPU but rounds twice in another order; on near-flat maps that changes the last bits
    almost everywhere, which the min-max normalisation then magnifies into different masks and level choices.
    Cost: ~0.1-0.2 s per 960x536 map on 2 CPU threads, small next to decoding the fields on a CPU.
    """
    lead = x.shape[:-2]
    y = x.reshape(-1, 1, *x.shape[-2:]).float()
    y = F.avg_pool2d(y, kernel_size=k, stride=1, padding=k // 2, count_include_pad=False)
    return y.reshape(*lead, *x.shape[-2:])


def smooth_relevancy(relevancy: torch.Tensor, kernel: int = SMOOTH_KERNEL) -> torch.Tensor:
    """(..., H, W) -> (..., H, W): ``0.5 * (avgpool_kernel(R) + R)``."""
    if kernel % 2 != 1:
        raise ValueError(f"smoothing kernel must be odd, got {kernel}")
    return 0.5 * (_pool(relevancy, kernel) + relevancy.float())


def normalize_relevancy(smoothed: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., H, W): per-map min-max to [0, 1], then ``clip(2x - 1, 0, 1)``."""
    flat = smoothed.reshape(*smoothed.shape[:-2], -1)
    lo = flat.min(dim=-1, keepdim=True).values
    x = flat - lo  # the same operations in the same order as the published code, in place where it can be
    hi = x.max(dim=-1, keepdim=True).values
    x.div_(hi + 1e-9)
    return x.mul_(2.0).sub_(1.0).clamp_(0.0, 1.0).reshape(smoothed.shape)


def cleanup_mask(mask: torch.Tensor, kernel: int = CLEANUP_KERNEL) -> torch.Tensor:
    """(..., H, W) bool -> bool: 7x7 average (no padding counted) ``> 0.5``, as the published ``smooth_cuda``.

    The direct pool matters here too: at borders an exactly half-full window must give exactly 0.5 (and fail
    ``> 0.5``); two divisions can round it to just above.
    """
    return _pool(mask, kernel) > 0.5


@dataclass
class LevelMasks:
    """Masks for one query over all levels.

    smoothed: (L, H, W) smoothed relevancy; raw: (L, H, W) bool thresholded masks (before cleanup);
    clean: (L, H, W) bool after the 7x7 cleanup; scores: (L,) max of each smoothed map; level: chosen index.
    """

    smoothed: torch.Tensor
    raw: torch.Tensor
    clean: torch.Tensor
    scores: torch.Tensor
    level: int

    @property
    def chosen_raw(self) -> torch.Tensor:
        """(H, W) bool mask of the chosen level before the cleanup (used by the time-sensitive protocol)."""
        return self.raw[self.level]

    @property
    def chosen_clean(self) -> torch.Tensor:
        """(H, W) bool mask of the chosen level after the cleanup (used for IoU)."""
        return self.clean[self.level]


def choose_level(smoothed: torch.Tensor) -> int:
    """Index of the level whose smoothed (L, H, W) map has the highest maximum (first on ties)."""
    return int(smoothed.reshape(smoothed.shape[0], -1).max(dim=1).values.argmax())


def masks_from_relevancy(relevancy: torch.Tensor, threshold: float = MASK_THRESHOLD,
                         smooth_kernel: int = SMOOTH_KERNEL, cleanup_kernel: int = CLEANUP_KERNEL) -> LevelMasks:
    """Full per-level post-processing of a (L, H, W) relevancy stack (a (H, W) map counts as one level)."""
    if relevancy.dim() == 2:
        relevancy = relevancy[None]
    smoothed = smooth_relevancy(relevancy, smooth_kernel)
    raw = normalize_relevancy(smoothed) > threshold
    clean = cleanup_mask(raw, cleanup_kernel)
    scores = smoothed.reshape(smoothed.shape[0], -1).max(dim=1).values
    return LevelMasks(smoothed=smoothed, raw=raw, clean=clean, scores=scores, level=choose_level(smoothed))
