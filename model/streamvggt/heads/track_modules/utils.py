"""Sampling and positional-embedding helpers of the track predictor.

Coordinates are pixel coordinates (x = column, y = row) of the sampled map, with 0 at the centre of the first
pixel and W-1 at the centre of the last one (the ``align_corners=True`` convention).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_1d(pos: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Positions (any shape, M values) -> (M, dim) float32 ``[sin(pos*w), cos(pos*w)]``, w_k = base^(-2k/dim).

    Computed in float64.
    """
    if dim % 2:
        raise ValueError(f"sin/cos embedding dimension must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / base ** omega
    angles = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def grid_sincos_pos_embed(dim: int, height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """2-D sin/cos embedding of an integer (height, width) grid -> (1, dim, height, width) float32.

    The first dim/2 channels encode the column (x), the last dim/2 the row (y).
    """
    if dim % 2:
        raise ValueError(f"2-D sin/cos embedding dimension must be even, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=device),
                            torch.arange(width, dtype=torch.float32, device=device), indexing="ij")
    emb = torch.cat([sincos_1d(xs, dim // 2), sincos_1d(ys, dim // 2)], dim=-1)  # (H*W, dim)
    return emb.reshape(1, height, width, dim).permute(0, 3, 1, 2)


def flow_embedding(xy: torch.Tensor, dim: int) -> torch.Tensor:
    """Embed 2-D offsets xy (B, N, 2) -> (B, N, 2*dim) float32: ``[pe(x), pe(y)]``.

    Each pe interleaves ``sin(v*f_k)`` (even channels) and ``cos(v*f_k)`` (odd channels) with the linearly
    spaced frequencies ``f_k = 2k * 1000 / dim``, k = 0..dim/2-1.
    """
    if xy.shape[-1] != 2:
        raise ValueError(f"flow_embedding expects (..., 2) offsets, got {tuple(xy.shape)}")
    freqs = torch.arange(0, dim, 2, device=xy.device, dtype=torch.float32) * (1000.0 / dim)
    parts = []
    for c in range(2):
        angles = xy[..., c:c + 1].float() * freqs
        # interleave: (..., dim/2, 2) -> (..., dim) with sin at even, cos at odd indices
        parts.append(torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)


def bilinear_sampler(inp: torch.Tensor, coords: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """Sample inp (B, C, H, W) at pixel coords (B, Ho, Wo, 2) (x, y) -> (B, C, Ho, Wo), align_corners=True."""
    h, w = inp.shape[-2:]
    coords = coords.detach().to(device=inp.device, dtype=inp.dtype)
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=inp.device, dtype=inp.dtype)
    return F.grid_sample(inp, coords * scale - 1, mode="bilinear", align_corners=True, padding_mode=padding_mode)


def sample_features4d(inp: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample features inp (B, C, H, W) at points coords (B, R, 2) -> (B, R, C) (border padding)."""
    feats = bilinear_sampler(inp, coords[:, :, None, :])  # (B, C, R, 1)
    return feats[..., 0].permute(0, 2, 1)
