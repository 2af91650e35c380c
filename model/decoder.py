"""Semantic Bridging Decoder: frozen geometry tokens (+ the frame) -> CLIP-aligned feature fields.

Published design (docs/architecture.md §5, ``LanguageHead_Multi``):

- a DPT feature extractor (``DPTHead(dim_in, features=128, feature_only=True, pos_embed=False,
  down_ratio=1)``) over the four cached backbone layers, giving ``features`` channels at the
  full input resolution (token grid x patch size); trainable, part of the decoder;
- a shared language UNet encoder (widths 32/64/128/256, three stride-2 downsamplings) and three
  UNet decoders (small, middle, large), each ending in a ``lang_dim``-channel convolution with no
  normalisation;
- an RGB branch with its own UNet encoder/decoder and a sigmoid;
- ours only: an optional time-sensitive decoder (``video_dim`` channels, 6 in 4D LangSplat) on the
  shared language encoder, trained when video targets exist.
- ours only, ``frame_input=True`` (default): the frame itself, normalised with the ImageNet mean/std, is
  concatenated to the DPT features before the shared language UNet encoder (so the three language decoders
  and the video decoder see it). The published ``LanguageHead_Multi`` feeds only the DPT features; the
  project brief says the decoder reads "the cached tokens (+ the frame)", and we add the frame because the
  tokens are at patch resolution (14x14 px): pixel-accurate region boundaries and small parts come from
  the frame. With a random tiny backbone (no weights) the frame is what makes small objects learnable at
  all. The RGB branch never sees the frame (it would copy it). ``frame_input=False`` gives the published
  architecture; checkpoints whose config predates the option load with ``frame_input=False``.

All outputs are bilinearly resized to the frame size when it differs from the DPT output size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from model.config_dict import DictConfig
from model.levels import LEVELS
from model.unet import UNetDecoder, UNetEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DecoderConfig(DictConfig):
    """Widths and sizes of the Semantic Bridging Decoder (defaults = the published model).

    ``layers`` are the backbone block indices the decoder reads (the token cache must hold exactly
    these); ``dim_in`` is the token width (2 x backbone embed dim).
    """

    dim_in: int = 2048
    patch_size: int = 14
    layers: tuple[int, ...] = (4, 11, 17, 23)
    dpt_features: int = 128
    dpt_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    lang_widths: tuple[int, ...] = (32, 64, 128, 256)
    rgb_widths: tuple[int, ...] = (32, 64, 128, 256)
    lang_dim: int = 3
    video_dim: int = 0
    rgb: bool = True
    norm: str = "group"
    frame_input: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def tiny(cls, dim_in: int = 128, layers: Sequence[int] = (0, 1, 2, 3), **kw: Any) -> DecoderConfig:
        """A few-thousand-parameter decoder for CPU tests (matches ``StreamVGGTConfig.tiny()`` tokens)."""
        base: dict[str, Any] = dict(dim_in=dim_in, layers=tuple(layers), dpt_features=16, dpt_out_channels=(8, 16, 32, 32),
                    lang_widths=(8, 16, 16, 32), rgb_widths=(8, 8, 16, 16))
        base.update(kw)
        return cls(**base)

    CONFIG_NAME = "decoder config"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecoderConfig:
        kw = cls.kwargs_from_dict(d)
        kw.setdefault("frame_input", False)  # configs written before the option had no frame input
        return cls(**kw)


def build_feature_extractor(cfg: DecoderConfig) -> nn.Module:
    """The backbone's DPT head in feature-only mode over the ``len(cfg.layers)`` cached layers."""
    from model.streamvggt.heads.dpt_head import DPTHead

    return DPTHead(
        dim_in=cfg.dim_in,
        patch_size=cfg.patch_size,
        features=cfg.dpt_features,
        out_channels=tuple(cfg.dpt_out_channels),
        intermediate_layer_idx=tuple(range(len(cfg.layers))),
        pos_embed=False,
        feature_only=True,
        down_ratio=1,
    )


class SemanticBridgingDecoder(nn.Module):
    """Decoder from cached geometry tokens to language feature fields (+ RGB, + optional video).

    ``feature_extractor`` may be given (any module with the DPT ``feature_only`` call signature);
    by default the backbone's ``DPTHead`` is built from ``config``.
    """

    def __init__(self, config: DecoderConfig | None = None, feature_extractor: nn.Module | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DecoderConfig()
        self.feature_extractor = feature_extractor if feature_extractor is not None else build_feature_extractor(cfg)
        self.lang_encoder = UNetEncoder(cfg.dpt_features + (3 if cfg.frame_input else 0), cfg.lang_widths,
                                        norm=cfg.norm)
        self.lang_decoders = nn.ModuleDict(
            {lvl: UNetDecoder(cfg.lang_dim, cfg.lang_widths, norm=cfg.norm) for lvl in LEVELS}
        )
        self.video_decoder = (
            UNetDecoder(cfg.video_dim, cfg.lang_widths, norm=cfg.norm) if cfg.video_dim > 0 else None
        )
        self.rgb_encoder: UNetEncoder | None
        self.rgb_decoder: UNetDecoder | None
        if cfg.rgb:
            self.rgb_encoder = UNetEncoder(cfg.dpt_features, cfg.rgb_widths, norm=cfg.norm)
            self.rgb_decoder = UNetDecoder(3, cfg.rgb_widths, norm=cfg.norm)
        else:
            self.rgb_encoder = self.rgb_decoder = None
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, tokens: Sequence[torch.Tensor], frame: torch.Tensor, patch_start_idx: int) -> torch.Tensor:
        """DPT features: tokens = list of len(layers) tensors (B, P, 2C) or (B, S=1, P, 2C),
        frame (B, 3, h, w) -> (B, dpt_features, h', w') with (h', w') = token grid x patch size."""
        if len(tokens) != len(self.config.layers):
            raise ValueError(f"decoder expects {len(self.config.layers)} token layers {self.config.layers}, got {len(tokens)}")
        toks = [t.unsqueeze(1) if t.dim() == 3 else t for t in tokens]
        dtype = next(self.lang_encoder.parameters()).dtype
        toks = [t.to(dtype) for t in toks]
        feats = self.feature_extractor(toks, frame.unsqueeze(1).to(dtype), patch_start_idx=patch_start_idx)
        if feats.dim() == 5:
            feats = feats.flatten(0, 1)
        return feats

    def forward(
        self, tokens: Sequence[torch.Tensor], frame: torch.Tensor, patch_start_idx: int = 5
    ) -> dict[str, Any]:
        """tokens: list of cached layers, each (B, P, 2C); frame: (B, 3, h, w) in [0, 1] (the network input the
        tokens were computed from; only its size is used when ``frame_input=False``).

        Returns ``{"lang": {"small"|"middle"|"large": (B, lang_dim, h, w)}, "rgb": (B, 3, h, w) in (0, 1)
        (absent when ``rgb=False``), "video": (B, video_dim, h, w) (only when ``video_dim > 0``)}``.
        """
        size = tuple(frame.shape[-2:])
        feats = self.features(tokens, frame, patch_start_idx)

        def fit(x: torch.Tensor) -> torch.Tensor:
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            return x

        lang_in = feats
        if self.config.frame_input:
            img = frame.to(feats.dtype)
            if tuple(img.shape[-2:]) != tuple(feats.shape[-2:]):
                img = F.interpolate(img, size=feats.shape[-2:], mode="bilinear", align_corners=False)
            mean, std = cast(torch.Tensor, self.rgb_mean), cast(torch.Tensor, self.rgb_std)  # buffers
            img = (img - mean.to(img.dtype)) / std.to(img.dtype)
            lang_in = torch.cat([feats, img], dim=1)
        enc = self.lang_encoder(lang_in)
        out: dict[str, Any] = {"lang": {lvl: fit(dec(enc)) for lvl, dec in self.lang_decoders.items()}}
        if self.video_decoder is not None:
            out["video"] = fit(self.video_decoder(enc))
        if self.rgb_encoder is not None and self.rgb_decoder is not None:  # made together (config.rgb)
            out["rgb"] = torch.sigmoid(fit(self.rgb_decoder(self.rgb_encoder(feats))))
        return out

    def predict(self, tokens: Sequence[torch.Tensor], frame: torch.Tensor, patch_start_idx: int = 5,
                out_hw: tuple[int, int] | None = None) -> dict[str, Any]:
        """The interface every decoder shares (see ``PublishedLanguageHead.predict``): :meth:`forward`, then every
        map resized bilinearly to ``out_hw`` when given."""
        out = self(tokens, frame, patch_start_idx=patch_start_idx)
        if out_hw is None or tuple(out_hw) == tuple(frame.shape[-2:]):
            return out

        def fit(x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, size=tuple(out_hw), mode="bilinear", align_corners=False)

        res: dict[str, Any] = {"lang": {k: fit(v) for k, v in out["lang"].items()}}
        res.update({k: fit(v) for k, v in out.items() if k != "lang"})
        return res


def init_feature_extractor_from_backbone(decoder: SemanticBridgingDecoder, source: str | Path,
                                         head: str = "depth_head") -> list[str]:
    """Copy the backbone DPT head's weights (``depth_head`` by default) into the decoder's feature extractor.

    ``source``: a StreamVGGT checkpoint (``.pth``/``.safetensors``/folder/Hub id, as ``StreamVGGT.from_pretrained``),
    or a backbone specification of another family (``vggt:facebook/VGGT-1B``, ``page4d:checkpoint_nomask.pt``).
    Only tensors whose name and shape match are copied (with ``dpt_features=128`` that is the token norm, the
    four projections and the resize layers; the fusion layers of a 256-wide head do not fit). Returns the
    copied names; raises ValueError when the token projections do not fit.
    """
    from model.backbones import BackboneSpec
    from model.registry import get_family

    spec = BackboneSpec.parse(str(source))
    if spec.is_tiny:
        raise ValueError(f"{source}: a random tiny backbone has no trained DPT head to copy")
    family = get_family(spec.family)
    path = family.resolve(spec.source)
    sd = family.read(path)
    prefix = head + "."
    own = decoder.feature_extractor.state_dict()
    take = {k[len(prefix):]: v for k, v in sd.items()
            if k.startswith(prefix) and k[len(prefix):] in own and own[k[len(prefix):]].shape == v.shape}
    if not any(k.startswith("projects.") for k in take):
        raise ValueError(f"{path}: no {head}.* tensor matches the decoder's DPT feature extractor (token width "
                         f"{decoder.config.dim_in}, out_channels {decoder.config.dpt_out_channels}); check the backbone")
    decoder.feature_extractor.load_state_dict(take, strict=False)
    return sorted(take)
