"""The StreamVGGT aggregator: patch embedding, then alternating frame / global attention blocks.

Frame blocks attend within each frame; global blocks attend across frames, block-causally (a frame sees
itself and earlier frames, optionally only the ``window`` most recent ones; see :mod:`model.streamvggt.cache`).
Batched (no cache), frame-by-frame streaming and chunked streaming all give the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, cast

import torch
from torch import nn

from model.streamvggt.cache import AggregatorCache, frame_causal_attention
from model.streamvggt.config import StreamVGGTConfig
from model.streamvggt.dinov2 import DinoV2, PatchEmbed
from model.streamvggt.layers import Block
from model.streamvggt.rope import RoPE2D, patch_positions

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Aggregator(nn.Module):
    """Alternating-attention aggregator (keys as in the official ``aggregator.*``).

    Per frame the token sequence is [camera (1), registers (R), patches], ``patch_start_idx = 1 + R``.
    ``camera_token`` (1, 2, 1, C) and ``register_token`` (1, 2, R, C): index 0 for the very first frame of a
    stream (frame 0), index 1 for every later frame (also after cache eviction).
    """

    def __init__(self, img_size: int = 518, patch_size: int = 14, embed_dim: int = 1024, depth: int = 24,
                 num_heads: int = 16, mlp_ratio: float = 4.0, num_register_tokens: int = 4,
                 patch_embed: str = "dinov2_vitl14_reg", qk_norm: bool = True, rope_freq: float = 100.0,
                 init_values: float = 0.01) -> None:
        super().__init__()
        if patch_embed == "conv":
            self.patch_embed: nn.Module = PatchEmbed(patch_size, 3, embed_dim)
        elif patch_embed == "dinov2_vitl14_reg":
            self.patch_embed = DinoV2(img_size=img_size, patch_size=patch_size, embed_dim=1024, depth=24,
                                      num_heads=16, num_register_tokens=4)
            if embed_dim != 1024:
                raise ValueError("patch_embed='dinov2_vitl14_reg' needs embed_dim=1024; use 'conv' for other widths")
        else:
            raise ValueError(f"unknown patch_embed {patch_embed!r}; choose 'dinov2_vitl14_reg' or 'conv'")
        self.patch_size = patch_size
        self.depth = depth
        self.num_heads = num_heads
        self.rope_freq = rope_freq
        self.patch_start_idx = 1 + num_register_tokens
        self.frame_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=init_values, qk_norm=qk_norm) for _ in range(depth))
        self.global_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, init_values=init_values, qk_norm=qk_norm) for _ in range(depth))
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, num_register_tokens, embed_dim) * 1e-6)
        # ImageNet mean/std are plain constants (non-persistent in the official model, so no state-dict keys);
        # keeping them out of the buffers lets the model be built on the meta device and loaded with assign=True.
        self._rope_cache: dict[tuple, RoPE2D] = {}

    @classmethod
    def from_config(cls, cfg: StreamVGGTConfig) -> Aggregator:
        """Build from a :class:`StreamVGGTConfig`."""
        return cls(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
                   num_heads=cfg.num_heads, mlp_ratio=cfg.mlp_ratio, num_register_tokens=cfg.num_register_tokens,
                   patch_embed=cfg.patch_embed, qk_norm=cfg.qk_norm, rope_freq=cfg.rope_freq,
                   init_values=cfg.init_values)

    def new_cache(self, window: int | None = None) -> AggregatorCache:
        """An empty streaming cache; ``window`` = max past frames each frame attends to (None = all)."""
        return AggregatorCache(self.depth, window)

    def _rope(self, grid_h: int, grid_w: int, device: torch.device) -> RoPE2D:
        key = (grid_h, grid_w, str(device))
        if key not in self._rope_cache:
            pos = patch_positions(grid_h, grid_w, self.patch_start_idx, device=device)
            head_dim = int(cast(Any, self.frame_blocks[0]).attn.head_dim)
            self._rope_cache[key] = RoPE2D(pos, head_dim, self.rope_freq)
        return self._rope_cache[key]

    def special_tokens(self, frame_ids: list[int], batch: int) -> torch.Tensor:
        """(batch*S, 1+R, C) camera+register tokens: index 0 for frame 0, index 1 for any later frame."""
        idx = torch.tensor([0 if f == 0 else 1 for f in frame_ids], device=self.camera_token.device)
        special = torch.cat([self.camera_token[0, idx], self.register_token[0, idx]], dim=1)  # (S, 1+R, C)
        return special.unsqueeze(0).expand(batch, -1, -1, -1).reshape(batch * len(frame_ids), *special.shape[1:])

    def embed(self, images: torch.Tensor, first_frame: int = 0) -> tuple[torch.Tensor, RoPE2D]:
        """Normalise and patch-embed (B, S, 3, H, W) images in [0, 1]; prepend the special tokens of frames
        ``first_frame ..``. Returns (tokens (B*S, P, C), the RoPE tables of one frame's P tokens)."""
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be (B, S, 3, H, W), got {tuple(images.shape)}")
        b, s, _, h, w = images.shape
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        dtype = self.camera_token.dtype  # the official mean/std buffers follow the model's dtype
        mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=dtype).view(1, 1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device, dtype=dtype).view(1, 1, 3, 1, 1)
        x = ((images - mean) / std).to(dtype)
        patch_tokens = self.patch_embed(x.reshape(b * s, 3, h, w))
        frame_ids = list(range(first_frame, first_frame + s))
        tokens = torch.cat([self.special_tokens(frame_ids, b), patch_tokens], dim=1)
        return tokens, self._rope(h // self.patch_size, w // self.patch_size, images.device)

    def forward(self, images: torch.Tensor, cache: AggregatorCache | None = None, window: int | None = None,
                layers: Sequence[int] | None = None) -> tuple[list[torch.Tensor | None], int]:
        """Aggregate S frames.

        Args:
            images: (B, S, 3, H, W) in [0, 1]; H, W multiples of the patch size.
            cache: None for one batched block-causal pass over the S frames (``window`` limits how many past
                frames each frame sees). With a cache, the S frames are appended after the frames already
                streamed (one frame or a chunk), attending to the cached keys/values; the cache is updated in
                place and its own ``window`` applies.
            layers: only build these outputs (others are None in the list), e.g. (4, 11, 17, 23) for token
                extraction: saves the memory of the other 20 concatenated layers.
        Returns:
            (list of ``depth`` tensors (B, S, P, 2C) = cat(frame-block out, global-block out), patch_start_idx),
            with P = patch_start_idx + (H/p)(W/p).
        """
        t0 = cache.num_frames_seen if cache is not None else 0
        tokens, rope = self.embed(images, t0)
        b, s = images.shape[:2]
        frame_ids = list(range(t0, t0 + s))
        p, c = tokens.shape[1], tokens.shape[2]

        outputs = []
        for i in range(self.depth):
            tokens = self.frame_blocks[i](tokens, rope=rope)
            frame_out = tokens.view(b, s, p, c)
            if cache is not None:
                attend = partial(cache.layers[i].attend, frames=frame_ids, window=cache.window)
            else:
                attend = partial(frame_causal_attention, q_frames=frame_ids, k_frames=frame_ids,
                                 tokens_per_frame=p, window=window)
            tokens = self.global_blocks[i](tokens.reshape(b, s * p, c), rope=rope, attend=attend)
            keep = layers is None or i in layers
            outputs.append(torch.cat([frame_out, tokens.view(b, s, p, c)], dim=-1) if keep else None)
            tokens = tokens.view(b * s, p, c)
        if cache is not None:
            cache.num_frames_seen += s
        return outputs, self.patch_start_idx
