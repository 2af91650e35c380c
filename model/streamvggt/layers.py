"""Transformer building blocks shared by the StreamVGGT backbone and its heads.

Parameter names (``fc1``/``fc2``, ``gamma``) match the official checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from model.streamvggt.rope import RoPE2D


class Mlp(nn.Module):
    """Two-layer perceptron ``fc2(act(fc1(x)))`` with exact (erf) GELU by default. (..., in) -> (..., out)."""

    def __init__(self, in_features: int, hidden_features: int | None = None, out_features: int | None = None,
                 act_layer: type[nn.Module] = nn.GELU, bias: bool = True) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel learned scale ``x * gamma`` (LayerScale, CaiT). (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


AttendFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Attention(nn.Module):
    """Multi-head self-attention with optional QK-LayerNorm and 2-D RoPE (keys ``qkv``, ``q_norm``, ``k_norm``,
    ``proj`` as in the official checkpoint). Attention runs through ``scaled_dot_product_attention``.

    Order of operations (official): qkv -> split heads -> q_norm/k_norm -> RoPE -> SDPA (scale 1/sqrt(D)) -> proj.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, proj_bias: bool = True,
                 qk_norm: bool = False, norm_eps: float = 1e-5) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, rope: RoPE2D | None = None, attend: AttendFn | None = None) -> torch.Tensor:
        """x: (B, N, C). ``rope`` rotates q and k (N a multiple of its tokens per frame). ``attend(q, k, v)``
        (each (B, heads, N, D)) replaces plain full attention, e.g. for causal masks or a key/value cache.
        Returns (B, N, C)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope.apply(q), rope.apply(k)
        out = F.scaled_dot_product_attention(q, k, v) if attend is None else attend(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``.

    Keys: ``norm1``, ``attn.*``, ``ls1.gamma``, ``norm2``, ``mlp.fc1/fc2``, ``ls2.gamma``. ``norm_eps`` is 1e-5 in
    the aggregator and camera trunk, 1e-6 in DINOv2. ``init_values=None`` gives Identity LayerScales (no keys).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_bias: bool = True, ffn_bias: bool = True, init_values: float | None = 0.01,
                 qk_norm: bool = False, norm_eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, qk_norm=qk_norm,
                              norm_eps=1e-5)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), bias=ffn_bias)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor, rope: RoPE2D | None = None, attend: AttendFn | None = None) -> torch.Tensor:
        """x: (B, N, C) -> (B, N, C); see :meth:`Attention.forward` for ``rope`` and ``attend``."""
        x = x + self.ls1(self.attn(self.norm1(x), rope=rope, attend=attend))
        return x + self.ls2(self.mlp(self.norm2(x)))
