"""Configuration of the StreamVGGT backbone (defaults = the official 1.26 B-parameter model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model.config_dict import DictConfig


@dataclass
class StreamVGGTConfig(DictConfig):
    """Architecture hyper-parameters. The defaults build the official ``lch01/StreamVGGT`` model.

    ``patch_embed`` is ``"dinov2_vitl14_reg"`` (DINOv2 ViT-L/14 with 4 registers, always 1024 wide and 24 deep,
    as in the official code) or ``"conv"`` (a single strided convolution, used by tiny test configs).
    """

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    patch_embed: str = "dinov2_vitl14_reg"
    qk_norm: bool = True
    rope_freq: float = 100.0
    init_values: float = 0.01
    camera_trunk_depth: int = 4
    camera_num_heads: int = 16
    camera_iterations: int = 4
    dpt_features: int = 256
    dpt_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    dpt_layers: tuple[int, ...] = (4, 11, 17, 23)
    track_features: int = 128
    track_hidden_size: int = 384
    track_corr_levels: int = 7
    track_corr_radius: int = 4
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def token_dim(self) -> int:
        """Width of one aggregated token: frame-block output concatenated with global-block output."""
        return 2 * self.embed_dim

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token in every frame (1 camera token + register tokens)."""
        return 1 + self.num_register_tokens

    @classmethod
    def tiny(cls) -> StreamVGGTConfig:
        """The tiny config of ``shared/fixtures/streamvggt_tiny_reference.*`` (conv patch embed, width 64)."""
        return cls(img_size=70, embed_dim=64, depth=4, num_heads=4, patch_embed="conv", camera_trunk_depth=2,
                   camera_num_heads=4, dpt_features=32, dpt_out_channels=(16, 32, 64, 64), dpt_layers=(0, 1, 2, 3),
                   track_features=16, track_hidden_size=32, track_corr_levels=2, track_corr_radius=2)

    CONFIG_NAME = "StreamVGGTConfig"
