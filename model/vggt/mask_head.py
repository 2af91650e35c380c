"""PAGE-4D's spatial mask head and the attention bias it puts on global blocks 10-19.

Facts (``shared/page4d_facts.md`` §3-5): the head reads frame block 9's patch tokens, standardises them per
image and channel over the patch grid (unbiased std, clamped at 1e-6), and predicts one value per patch:
``attn_value = sigmoid(head0(x) + mean_c(x)) - 0.5`` (0 at the special tokens). ``attn_mask`` is
``alpha = 64 * mask_alpha(step, hold_start, hold_end)`` at the special tokens of every frame, 0 at patches.
A masked global block adds ``attn_mask[query] * attn_value[key]`` to every head's attention logits, which the
official code does by widening q, k and v; :func:`biased_attention` reproduces that widening exactly (it is the
plain formula only when the head width is a multiple of 8).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: the official bias scale at the special tokens (``SpatialMaskHead_IMP.scale``)
ALPHA_SCALE = 64.0
#: frame block after which the head runs, and the global blocks it biases (fixed lists in the official code)
MASK_AFTER_FRAME_BLOCK = 9
MASKED_GLOBAL_BLOCKS = range(10, 20)


def mask_alpha(step: float, hold_start: float = 0, hold_end: float = 0) -> float:
    """1 before ``hold_start``, 0 from ``hold_end`` on, a cosine ramp from 1 to 0 in between."""
    if step < hold_start:
        return 1.0
    if step >= hold_end:
        return 0.0
    u = (step - hold_start) / float(hold_end - hold_start)
    return 0.5 * (1.0 + math.cos(math.pi * u))


class SpatialMaskHead(nn.Module):
    """``aggregator.spatial_mask_head``: keys ``head0.{0,2,4}.{weight,bias}``.

    ``head0``: depthwise 3x3 conv (bias) -> GELU -> 1x1 conv C->256 -> GELU -> 1x1 conv 256->1.
    ``step`` counts training-mode calls (not in checkpoints; eval mode keeps 0), as the official head does.
    """

    def __init__(self, dim: int, mask_hold_start: float = 0, mask_hold_end: float = 0, hidden: int = 256) -> None:
        super().__init__()
        self.head0 = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, groups=dim), nn.GELU(),
                                   nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 1, 1))
        self.mask_hold_start = mask_hold_start
        self.mask_hold_end = mask_hold_end
        self.step = 0.0

    @property
    def alpha(self) -> float:
        """The bias at the special tokens for the current ``step`` (64 or 0 at inference)."""
        return mask_alpha(self.step, self.mask_hold_start, self.mask_hold_end) * ALPHA_SCALE

    @staticmethod
    def standardise(grid: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> per-image, per-channel standardised over (h, w), unbiased std clamped at 1e-6."""
        mean = grid.mean(dim=(2, 3), keepdim=True)
        std = grid.std(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        return (grid - mean) / std

    def forward(self, frame_tokens: torch.Tensor, patch_start_idx: int, grid_h: int, grid_w: int
                ) -> dict[str, torch.Tensor]:
        """frame_tokens: (B, S, P, C) frame block 9 output (detached by the caller).

        Returns ``attn_mask`` (B, S*P), ``attn_value`` (B, 1, S*P), and the head's ``input`` (B*S, C, h, w,
        standardised) and ``logit`` (B*S, 1, h, w).
        """
        if self.training:
            self.step += 1.0
        alpha = self.alpha
        b, s, p, c = frame_tokens.shape
        patches = frame_tokens.reshape(b * s, p, c)[:, patch_start_idx:]
        grid = patches.transpose(1, 2).reshape(b * s, c, grid_h, grid_w)
        x = self.standardise(grid)
        logit = self.head0(x)
        value = torch.sigmoid(logit + x.mean(dim=1, keepdim=True)) - 0.5
        attn_value = frame_tokens.new_zeros(b, s, p)
        attn_value[:, :, patch_start_idx:] = value.reshape(b, s, grid_h * grid_w)
        attn_mask = frame_tokens.new_zeros(b, s, p)
        attn_mask[:, :, :patch_start_idx] = alpha
        return {"attn_mask": attn_mask.reshape(b, s * p), "attn_value": attn_value.reshape(b, 1, s * p),
                "input": x, "logit": logit}


def biased_attention(attn_mask: torch.Tensor, attn_value: torch.Tensor):
    """An ``attend(q, k, v)`` for :class:`~model.streamvggt.layers.Attention` adding the mask bias, or None
    (plain attention) when ``attn_mask`` is all zero, as the official code decides.

    The official widening: with ``D_aug = 8 * floor((D + 8) / 8)``, q becomes ``[q * sqrt(D_aug / D),
    attn_mask * sqrt(D_aug), 0 x 7]``, k ``[k, attn_value, 0 x 7]``, v ``[v, 0 x 8]``; SDPA (default scale
    ``1 / sqrt(D + 8)``) and the first D channels kept. Exact in real arithmetic only for D a multiple of 8.
    """
    if not bool(attn_mask.any()):
        return None

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, heads, n, d = q.shape
        d_aug = ((d + 8) // 8) * 8
        row = attn_mask[:, None, :, None].expand(b, heads, n, 1)
        col = attn_value[:, :, :, None].expand(b, heads, n, 1)
        tail7 = q.new_zeros(b, heads, n, 7)
        q2 = torch.cat([q * (d_aug / d) ** 0.5, row * d_aug ** 0.5, tail7], dim=-1)
        k2 = torch.cat([k, col, tail7], dim=-1)
        v2 = torch.cat([v, q.new_zeros(b, heads, n, 8)], dim=-1)
        return F.scaled_dot_product_attention(q2, k2, v2)[..., :d]

    return attend
