"""Patch embeddings of the aggregator: DINOv2 ViT-L/14 with 4 registers, or a plain strided convolution.

Key names match the official checkpoint (``aggregator.patch_embed.*``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.streamvggt.layers import Block


class PatchEmbed(nn.Module):
    """Conv patchify: (N, 3, H, W) -> (N, (H/p)*(W/p), C), row-major patches. Key ``proj``."""

    def __init__(self, patch_size: int = 14, in_chans: int = 3, embed_dim: int = 1024) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2(nn.Module):
    """DINOv2 ViT with register tokens, as the official aggregator builds it (``vit_large``: 1024 wide,
    24 blocks, 16 heads, LayerScale 1.0, LayerNorm eps 1e-6, no RoPE, no qk-norm).

    ``forward`` returns only the final-normed patch tokens (N, (H/14)*(W/14), C) — the aggregator discards
    DINOv2's cls and register outputs. The positional embedding (trained on a 37x37 grid) is resized with
    antialiased bicubic interpolation in fp32 unless the input is exactly the training size.
    """

    def __init__(self, img_size: int = 518, patch_size: int = 14, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, mlp_ratio: float = 4.0, num_register_tokens: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        num_patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)  # unused, kept for keys
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=1.0, qk_norm=False, norm_eps=1e-6)
            for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def interpolate_pos_encoding(self, num_patches: int, height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        """Positional embedding (1, 1 + num_patches, C) for an image of ``height`` x ``width`` pixels."""
        n = self.pos_embed.shape[1] - 1
        if num_patches == n and height == width:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        m = int(math.sqrt(n))
        dim = pos.shape[-1]
        grid = patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height // self.patch_size, width // self.patch_size), mode="bicubic",
                             antialias=True)
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([cls_pos, patch_pos], dim=1).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) normalised images -> (N, (H/14)*(W/14), C) normed patch tokens."""
        height, width = x.shape[-2:]
        tokens = self.patch_embed(x)
        n_img, n_patch, _ = tokens.shape
        tokens = torch.cat([self.cls_token.expand(n_img, -1, -1), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(n_patch, height, width, tokens.dtype)
        regs = self.register_tokens.expand(n_img, -1, -1)
        tokens = torch.cat([tokens[:, :1], regs, tokens[:, 1:]], dim=1)
        for blk in self.blocks:
            tokens = blk(tokens)
        tokens = self.norm(tokens)
        return tokens[:, 1 + self.num_register_tokens:]
