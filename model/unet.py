"""Small UNet building blocks of the Semantic Bridging Decoder (widths configurable).

The published language head uses a shared encoder of widths 32/64/128/256 with three stride-2
downsamplings, and per-output decoders that upsample back to the input resolution with skip
connections and end in a plain convolution (no normalisation, no activation).

Normalisation is GroupNorm by default rather than BatchNorm: GroupNorm statistics are per sample,
so a data-parallel run with per-rank batch ``b`` computes exactly the same function as a single
process with batch ``world * b`` (BatchNorm would not).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def make_norm(kind: str, channels: int) -> nn.Module:
    """``"group"`` (GroupNorm, 8 channels per group), ``"layer"`` (GroupNorm with one group), ``"batch"``,
    ``"instance"`` or ``"none"``."""
    if kind == "group":
        groups = max(1, channels // 8)
        while channels % groups:
            groups -= 1
        return nn.GroupNorm(groups, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of group, batch, instance, none")


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by norm and ReLU; the first may have stride 2.

    (B, in_ch, H, W) -> (B, out_ch, H/stride, W/stride) (rounded up).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, norm: str = "group") -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1),
            make_norm(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
            make_norm(norm, out_ch),
            nn.ReLU(inplace=True),
        )


class UNetEncoder(nn.Module):
    """Encoder: a full-resolution block then ``len(widths) - 1`` stride-2 blocks.

    ``forward(x (B, in_ch, H, W)) -> list`` of feature maps, finest first:
    ``[(B, widths[0], H, W), (B, widths[1], H/2, W/2), ...]``.
    """

    def __init__(self, in_ch: int, widths: Sequence[int] = (32, 64, 128, 256), norm: str = "group") -> None:
        super().__init__()
        widths = list(widths)
        self.widths = widths
        self.inc = ConvBlock(in_ch, widths[0], norm=norm)
        self.downs = nn.ModuleList(
            ConvBlock(widths[i - 1], widths[i], stride=2, norm=norm) for i in range(1, len(widths))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.inc(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        return feats


class UNetDecoder(nn.Module):
    """Decoder: upsample (bilinear) to each skip's size, concatenate, convolve; end in a 1x1 conv.

    ``forward(feats)`` with the encoder's list (finest first) -> (B, out_ch, H, W) at the finest size.
    The final convolution has no normalisation and no activation.
    """

    def __init__(self, out_ch: int, widths: Sequence[int] = (32, 64, 128, 256), norm: str = "group") -> None:
        super().__init__()
        widths = list(widths)
        self.ups = nn.ModuleList(
            ConvBlock(widths[i] + widths[i - 1], widths[i - 1], norm=norm) for i in range(len(widths) - 1, 0, -1)
        )
        self.out = nn.Conv2d(widths[0], out_ch, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for up, skip in zip(self.ups, reversed(feats[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skip], dim=1))
        return self.out(x)
