"""Transformer building blocks shared by the StreamVGGT backbone and its heads.

Parameter names (``fc1``/``fc2``, ``gamma``) match the official checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn


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
