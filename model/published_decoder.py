"""The published 4DLangVGGT language head (``LanguageHead_Multi``), as a model of ours.

Module names, shapes and computation are those of the published head, so the published
``checkpoint_epoch_100.pth`` loads strictly (``model.decoder_io`` reads it without unpickling):

- ``feature_extractor``: our backbone's :class:`~model.streamvggt.heads.dpt_head.DPTHead` in feature-only mode
  (``features`` channels, no positional embedding, ``down_ratio=1``) over the four cached layers;
- ``lang_encoder`` / ``rgb_encoder``: UNet encoders of widths ``hidden_dim x (1, 2, 4, 8)``: ``down{1..4}`` =
  [3x3 conv, BatchNorm, ReLU] x 2, ``pool{1..3}`` = a learned 2x2 stride-2 convolution (sizes floor);
- ``lang_decoder_{small,middle,large}``: UNet decoders: ``up{1..3}`` = 2x2 stride-2 transposed convolution,
  bilinear (align_corners=False) alignment to the skip's size, ``[up, skip]`` concatenated, ``conv{1..3}`` =
  [3x3 conv, BatchNorm, ReLU] x 2; ``final_conv`` = 3x3 convolution to ``lang_dim`` (no norm, no activation);
- ``rgb_decoder`` = ``Sequential(UNet decoder to 3 channels, Sigmoid)`` (keys ``rgb_decoder.0.*``).

The three language maps are stacked as ``(B, S, 3 levels, lang_dim, H, W)``; when the DPT grid (token grid x 14)
differs from the requested ``(img_height, img_width)`` the stack (as ``3 * lang_dim`` channels) and the already
sigmoided RGB are resized bilinearly (align_corners=False), exactly as published. Facts:
docs/architecture.md §5 and the README section "Reproduce the published 4DLangVGGT model".

Our own :class:`~model.decoder.SemanticBridgingDecoder` stays the default for training; this class is the way to
run (and optionally train) the published architecture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from model.config_dict import DictConfig
from model.levels import LEVELS

KIND = "published"


@dataclass
class PublishedDecoderConfig(DictConfig):
    """Constructor arguments of the published head (defaults = the released ``LanguageHead_Multi(2048, 14, 3)``).

    ``layers`` are the backbone blocks whose tokens the DPT reads (the published head indexes the full 24-layer
    list with 4, 11, 17, 23; we pass it those four layers). ``hidden_dim`` is the UNets' base width.
    """

    dim_in: int = 2048
    patch_size: int = 14
    lang_dim: int = 3
    features: int = 128
    hidden_dim: int = 32
    dpt_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    layers: tuple[int, ...] = (4, 11, 17, 23)
    kind: str = KIND

    # the interface the predictor, the trainer and the token cache read from any decoder config
    video_dim: int = 0
    rgb: bool = True

    @property
    def dpt_features(self) -> int:
        return self.features

    @property
    def widths(self) -> tuple[int, int, int, int]:
        h = self.hidden_dim
        return (h, 2 * h, 4 * h, 8 * h)

    @classmethod
    def tiny(cls, dim_in: int = 128, layers: Sequence[int] = (0, 1, 2, 3), **kw: Any) -> PublishedDecoderConfig:
        """A small head for CPU tests (tokens of ``StreamVGGTConfig.tiny()``)."""
        base: dict[str, Any] = dict(dim_in=dim_in, layers=tuple(layers), features=16, hidden_dim=8,
                                    dpt_out_channels=(8, 16, 32, 32))
        base.update(kw)
        return cls(**base)

    CONFIG_NAME = "published-decoder config"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PublishedDecoderConfig:
        kw = cls.kwargs_from_dict(d)
        if kw.get("kind", KIND) != KIND or kw.get("video_dim", 0) or not kw.get("rgb", True):
            raise ValueError(f"not a published-decoder config: {d}")
        return cls(**kw)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], layers: Sequence[int] = (4, 11, 17, 23),
                        patch_size: int = 14) -> PublishedDecoderConfig:
        """Infer the widths from a published state dict (so any ``lang_dim`` / size of the head loads)."""
        try:
            dim_in = int(sd["feature_extractor.norm.weight"].shape[0])
            oc = tuple(int(sd[f"feature_extractor.projects.{i}.weight"].shape[0]) for i in range(4))
            features = int(sd["feature_extractor.scratch.layer1_rn.weight"].shape[0])
            hidden = int(sd["lang_encoder.down1.0.weight"].shape[0])
            lang_dim = int(sd["lang_decoder_small.final_conv.weight"].shape[0])
        except KeyError as e:
            raise ValueError(f"not a published LanguageHead_Multi state dict (no {e.args[0]})") from None
        return cls(dim_in=dim_in, patch_size=patch_size, lang_dim=lang_dim, features=features, hidden_dim=hidden,
                   dpt_out_channels=oc, layers=tuple(layers))


def double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    """[3x3 conv (pad 1), BatchNorm2d, ReLU] x 2: keys ``.0``, ``.1``, ``.3``, ``.4``. (N, in, H, W) -> (N, out, H, W)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
    )


class PublishedUNetEncoder(nn.Module):
    """``down1`` at full size, then ``pool_k`` (2x2 stride-2 conv, floor) + ``down_{k+1}``; widths w0..w3.

    ``forward(x (N, in_ch, H, W))`` -> ``[x1 (N, w0, H, W), x2 (N, w1, H/2, W/2), x3 (.., H/4), x4 (.., H/8)]``.
    """

    def __init__(self, in_ch: int, widths: Sequence[int]) -> None:
        super().__init__()
        w = list(widths)
        self.down1 = double_conv(in_ch, w[0])
        self.pool1 = nn.Conv2d(w[0], w[0], kernel_size=2, stride=2)
        self.down2 = double_conv(w[0], w[1])
        self.pool2 = nn.Conv2d(w[1], w[1], kernel_size=2, stride=2)
        self.down3 = double_conv(w[1], w[2])
        self.pool3 = nn.Conv2d(w[2], w[2], kernel_size=2, stride=2)
        self.down4 = double_conv(w[2], w[3])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x1 = self.down1(x)
        x2 = self.down2(self.pool1(x1))
        x3 = self.down3(self.pool2(x2))
        x4 = self.down4(self.pool3(x3))
        return [x1, x2, x3, x4]


class PublishedUNetDecoder(nn.Module):
    """``up_k`` (2x2 stride-2 transposed conv), bilinear alignment to the skip, ``conv_k([up, skip])``, then
    ``final_conv`` (3x3, no norm, no activation). ``forward(encoder list)`` -> (N, out_ch, H, W)."""

    def __init__(self, out_ch: int, widths: Sequence[int]) -> None:
        super().__init__()
        w = list(widths)
        self.up1 = nn.ConvTranspose2d(w[3], w[2], kernel_size=2, stride=2)
        self.conv1 = double_conv(2 * w[2], w[2])
        self.up2 = nn.ConvTranspose2d(w[2], w[1], kernel_size=2, stride=2)
        self.conv2 = double_conv(2 * w[1], w[1])
        self.up3 = nn.ConvTranspose2d(w[1], w[0], kernel_size=2, stride=2)
        self.conv3 = double_conv(2 * w[0], w[0])
        self.final_conv = nn.Conv2d(w[0], out_ch, kernel_size=3, padding=1)

    @staticmethod
    def _join(up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(up, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([up, skip], dim=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x1, x2, x3, x4 = feats
        x = self.conv1(self._join(self.up1(x4), x3))
        x = self.conv2(self._join(self.up2(x), x2))
        x = self.conv3(self._join(self.up3(x), x1))
        return self.final_conv(x)


class PublishedLanguageHead(nn.Module):
    """The published ``LanguageHead_Multi``: cached tokens -> three language maps + RGB (see the module doc)."""

    def __init__(self, config: PublishedDecoderConfig | None = None) -> None:
        super().__init__()
        from model.streamvggt.heads.dpt_head import DPTHead

        self.config = cfg = config or PublishedDecoderConfig()
        self.feature_extractor = DPTHead(
            dim_in=cfg.dim_in, patch_size=cfg.patch_size, features=cfg.features,
            out_channels=tuple(cfg.dpt_out_channels), intermediate_layer_idx=tuple(range(len(cfg.layers))),
            pos_embed=False, feature_only=True, down_ratio=1)
        self.lang_encoder = PublishedUNetEncoder(cfg.features, cfg.widths)
        self.rgb_encoder = PublishedUNetEncoder(cfg.features, cfg.widths)
        self.lang_decoder_small = PublishedUNetDecoder(cfg.lang_dim, cfg.widths)
        self.lang_decoder_middle = PublishedUNetDecoder(cfg.lang_dim, cfg.widths)
        self.lang_decoder_large = PublishedUNetDecoder(cfg.lang_dim, cfg.widths)
        self.rgb_decoder = nn.Sequential(PublishedUNetDecoder(3, cfg.widths), nn.Sigmoid())

    def forward(self, tokens_list: Sequence[torch.Tensor], images: torch.Tensor | Sequence[int],
                patch_start_idx: int, img_height: int = 518, img_width: int = 518
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The published call.

        Args:
            tokens_list: the decoder's ``len(config.layers)`` token layers, each (B, S, P, dim_in).
            images: (B, S, 3, h, w) (only the shape is read; h, w give the token grid) or that shape.
            img_height, img_width: output size; the maps are stretched to it when it differs from the DPT grid.
        Returns:
            lang (B, S, 3, lang_dim, img_height, img_width), rgb (B, S, 3, img_height, img_width) in (0, 1).
        """
        feats = self.feature_extractor(tokens_list, images, patch_start_idx=patch_start_idx)  # (B, S, F, h, w)
        B, S = feats.shape[:2]
        x = feats.flatten(0, 1)
        enc = self.lang_encoder(x)
        lang = torch.stack([self.lang_decoder_small(enc), self.lang_decoder_middle(enc),
                            self.lang_decoder_large(enc)], dim=1)  # (B*S, 3, lang_dim, h, w)
        rgb = self.rgb_decoder(self.rgb_encoder(x))  # (B*S, 3, h, w), sigmoided
        size = (int(img_height), int(img_width))
        n, levels, dim, h, w = lang.shape
        if (h, w) != size:
            lang = F.interpolate(lang.reshape(n, levels * dim, h, w), size=size, mode="bilinear",
                                 align_corners=False).reshape(n, levels, dim, *size)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False)
        return lang.reshape(B, S, levels, dim, *size), rgb.reshape(B, S, 3, *size)

    def predict(self, tokens: Sequence[torch.Tensor], frame: torch.Tensor, patch_start_idx: int = 5,
                out_hw: tuple[int, int] | None = None) -> dict[str, Any]:
        """Our decoders' interface: tokens (len(layers) x (N, P, dim_in)), frame (N, 3, h, w) (shape only) ->
        ``{"lang": {level: (N, lang_dim, H, W)}, "rgb": (N, 3, H, W)}`` with (H, W) = ``out_hw`` or (h, w)."""
        toks = [t.unsqueeze(1) if t.dim() == 3 else t for t in tokens]  # frames as the batch, S = 1
        dtype = cast(Any, self.lang_encoder).down1[0].weight.dtype
        toks = [t.to(dtype) for t in toks]
        H, W = out_hw if out_hw is not None else tuple(frame.shape[-2:])
        lang, rgb = self(toks, (frame.shape[0], 1, *frame.shape[1:]), patch_start_idx, img_height=H, img_width=W)
        return {"lang": {lvl: lang[:, 0, i] for i, lvl in enumerate(LEVELS)}, "rgb": rgb[:, 0]}
