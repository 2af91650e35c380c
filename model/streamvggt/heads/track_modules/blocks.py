"""Transformer blocks, the update transformer and the correlation pyramid of the track predictor.

Parameter names match the official checkpoint (``norm1``, ``attn`` / ``cross_attn`` as ``nn.MultiheadAttention``,
``norm_context``, ``mlp.fc1/fc2``, and the misspelled ``virual_tracks``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.streamvggt.heads.track_modules.utils import bilinear_sampler
from model.streamvggt.layers import Mlp


class AttnBlock(nn.Module):
    """Self-attention block. (B, L, C) -> (B, L, C).

    As in the reference, the attention residual is added to the *normalised* input:
    ``y = norm1(x); y = y + attn(y); out = y + mlp(norm2(y))``.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(embed_dim=hidden_size, num_heads=num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class CrossAttnBlock(nn.Module):
    """Cross-attention block: queries x (B, L, C) attend to context (B, M, C) -> (B, L, C).

    ``y = norm1(x); y = y + attn(y, norm_context(ctx)); out = y + mlp(norm2(y))``.
    """

    def __init__(self, hidden_size: int, num_heads: int = 1, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size)
        self.norm_context = nn.LayerNorm(hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.cross_attn = nn.MultiheadAttention(embed_dim=hidden_size, num_heads=num_heads, batch_first=True)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x)
        context = self.norm_context(context)
        x = x + self.cross_attn(x, context, context, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class EfficientUpdateFormer(nn.Module):
    """Update transformer over tracks: alternating attention along time and (via virtual tracks) across tracks.

    Input (B, N, T, input_dim) -> output (B, N, T, output_dim). ``num_virtual_tracks`` learned tokens act as a
    bottleneck for the across-track attention: virtual <- points, virtual <-> virtual, points <- virtual.
    """

    def __init__(self, space_depth: int = 6, time_depth: int = 6, input_dim: int = 320, hidden_size: int = 384,
                 num_heads: int = 8, output_dim: int = 130, mlp_ratio: float = 4.0, add_space_attn: bool = True,
                 num_virtual_tracks: int = 64) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.hidden_size = hidden_size
        self.add_space_attn = add_space_attn
        self.num_virtual_tracks = num_virtual_tracks
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden_size, bias=True)
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, output_dim, bias=True)
        # Name kept misspelled: it is the checkpoint key.
        self.virual_tracks = (nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
                              if add_space_attn else None)
        self.time_blocks = nn.ModuleList([AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(time_depth)])
        if add_space_attn:
            if not 0 < space_depth <= time_depth:
                raise ValueError(f"space_depth must be in 1..time_depth, got {space_depth} (time_depth {time_depth})")
            self.space_virtual_blocks = nn.ModuleList(
                [AttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)])
            self.space_point2virtual_blocks = nn.ModuleList(
                [CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)])
            self.space_virtual2point_blocks = nn.ModuleList(
                [CrossAttnBlock(hidden_size, num_heads, mlp_ratio) for _ in range(space_depth)])
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.flow_head.weight, std=0.001)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, T, input_dim) -> (B, N, T, output_dim)."""
        tokens = self.input_transform(self.input_norm(x))
        init_tokens = tokens
        B, N_points, T, C = tokens.shape
        if self.add_space_attn:
            assert self.virual_tracks is not None  # made in __init__ whenever add_space_attn
            tokens = torch.cat([tokens, self.virual_tracks.to(tokens.dtype).repeat(B, 1, T, 1)], dim=1)
        N = tokens.shape[1]

        space_every = len(self.time_blocks) // len(self.space_virtual_blocks) if self.add_space_attn else 0
        j = 0
        for i, time_block in enumerate(self.time_blocks):
            tokens = time_block(tokens.reshape(B * N, T, C)).reshape(B, N, T, C)
            if self.add_space_attn and i % space_every == 0 and j < len(self.space_virtual_blocks):
                space = tokens.permute(0, 2, 1, 3).reshape(B * T, N, C)
                points, virtual = space[:, :N_points], space[:, N_points:]
                virtual = self.space_virtual2point_blocks[j](virtual, points, mask=mask)
                virtual = self.space_virtual_blocks[j](virtual)
                points = self.space_point2virtual_blocks[j](points, virtual, mask=mask)
                tokens = torch.cat([points, virtual], dim=1).reshape(B, T, N, C).permute(0, 2, 1, 3)
                j += 1

        tokens = tokens[:, :N_points] + init_tokens
        return self.flow_head(self.output_norm(tokens))


class CorrBlock:
    """Multi-scale correlation lookup between track features and per-frame feature maps.

    Builds an average-pooled pyramid of ``num_levels`` levels from fmaps (B, S, C, H, W); ``corr_sample`` returns
    for each track the (2r+1)^2 window of scaled dot products around its coordinate on every level.
    """

    def __init__(self, fmaps: torch.Tensor, num_levels: int = 4, radius: int = 4, padding_mode: str = "zeros") -> None:
        B, S, C, H, W = fmaps.shape
        if min(H, W) < 2 ** (num_levels - 1):
            raise ValueError(f"feature maps {H}x{W} are too small for {num_levels} correlation levels "
                             f"(need at least {2 ** (num_levels - 1)} pixels per side); use fewer corr_levels")
        self.num_levels = num_levels
        self.radius = radius
        self.padding_mode = padding_mode
        self.pyramid = [fmaps]
        current = fmaps
        for _ in range(num_levels - 1):
            b, s, c, h, w = current.shape
            current = F.avg_pool2d(current.reshape(b * s, c, h, w), kernel_size=2, stride=2)
            current = current.reshape(b, s, c, *current.shape[-2:])
            self.pyramid.append(current)
        # Window offsets (2r+1, 2r+1, 2); as in the reference, component 0 (added to x) varies along the
        # window's first axis, which fixes the order of the flattened correlation features.
        d = torch.linspace(-radius, radius, 2 * radius + 1, device=fmaps.device, dtype=fmaps.dtype)
        self.delta = torch.stack(torch.meshgrid(d, d, indexing="ij"), dim=-1)

    def corr_sample(self, targets: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """targets (B, S, N, C), coords (B, S, N, 2) at level-0 resolution -> (B, S, N, levels*(2r+1)^2)."""
        B, S, N, C = targets.shape
        side = 2 * self.radius + 1
        out = []
        for level, fmaps in enumerate(self.pyramid):
            h, w = fmaps.shape[-2:]
            corr = torch.matmul(targets, fmaps.reshape(B, S, C, h * w)) / math.sqrt(C)  # (B, S, N, h*w)
            centre = coords.reshape(B * S * N, 1, 1, 2) / (2 ** level)
            window = centre + self.delta.to(device=coords.device, dtype=coords.dtype).view(1, side, side, 2)
            sampled = bilinear_sampler(corr.reshape(B * S * N, 1, h, w), window, padding_mode=self.padding_mode)
            out.append(sampled.reshape(B, S, N, side * side))
        return torch.cat(out, dim=-1).contiguous()
