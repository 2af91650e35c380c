"""VGGT-1B and PAGE-4D: the StreamVGGT blocks and heads with global attention over every frame of a window.

Children and state-dict keys as in the official ``VGGT``: ``aggregator`` (+ ``aggregator.spatial_mask_head``
for PAGE-4D), ``camera_head``, ``point_head``, ``depth_head``, ``track_head`` (each head optional, as the
official ``enable_*`` switches). Facts: ``shared/page4d_facts.md`` §1-6.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from model.streamvggt.aggregator import Aggregator
from model.streamvggt.heads.camera_head import CameraHead
from model.vggt.config import VGGTConfig
from model.vggt.mask_head import (
    MASK_AFTER_FRAME_BLOCK,
    MASKED_GLOBAL_BLOCKS,
    SpatialMaskHead,
    biased_attention,
)


class VGGTAggregator(Aggregator):
    """The StreamVGGT aggregator run without causal mask or cache; with ``spatial_mask=True`` (PAGE-4D) the
    mask head runs after frame block 9 and biases global blocks 10-19 (when its alpha is non-zero)."""

    def __init__(self, *, spatial_mask: bool = False, mask_hold_start: float = 0, mask_hold_end: float = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spatial_mask_head: SpatialMaskHead | None = None
        if spatial_mask:
            if self.depth > 24:
                raise ValueError(f"PAGE-4D with depth {self.depth}: the official layer lists stop at block 23 "
                                 "(blocks 24.. never run there); use depth <= 24")
            dim = self.camera_token.shape[-1]
            self.spatial_mask_head = SpatialMaskHead(dim, mask_hold_start, mask_hold_end)

    def forward(self, images: torch.Tensor, layers: Sequence[int] | None = None  # type: ignore[override]
                ) -> tuple[list[torch.Tensor | None], int, dict[str, torch.Tensor] | None]:
        """images (B, S, 3, H, W) in [0, 1] -> (``depth`` tensors (B, S, P, 2C), or None for layers not in
        ``layers``; patch_start_idx; the mask head's outputs or None, see :meth:`SpatialMaskHead.forward`)."""
        tokens, rope = self.embed(images)
        b, s, _, h, w = images.shape
        p, c = tokens.shape[1], tokens.shape[2]
        mask: dict[str, torch.Tensor] | None = None
        biased = None
        outputs: list[torch.Tensor | None] = []
        for i in range(self.depth):
            tokens = self.frame_blocks[i](tokens, rope=rope)
            frame_out = tokens.view(b, s, p, c)
            if self.spatial_mask_head is not None and i == MASK_AFTER_FRAME_BLOCK:
                mask = self.spatial_mask_head(frame_out.detach(), self.patch_start_idx, h // self.patch_size,
                                              w // self.patch_size)
                biased = biased_attention(mask["attn_mask"], mask["attn_value"])
            attend = biased if i in MASKED_GLOBAL_BLOCKS else None
            tokens = self.global_blocks[i](tokens.reshape(b, s * p, c), rope=rope, attend=attend)
            keep = layers is None or i in layers
            outputs.append(torch.cat([frame_out, tokens.view(b, s, p, c)], dim=-1) if keep else None)
            tokens = tokens.view(b * s, p, c)
        return outputs, self.patch_start_idx, mask


class VGGT(nn.Module):
    """VGGT (``spatial_mask=False``) or PAGE-4D (``spatial_mask=True``) from a :class:`VGGTConfig`."""

    #: global attention over a window: long videos go through :class:`model.vggt.windows.WindowedRunner`
    streaming = False

    def __init__(self, config: VGGTConfig | None = None, spatial_mask: bool = False) -> None:
        super().__init__()
        from model.streamvggt.heads.dpt_head import DPTHead
        from model.streamvggt.heads.track_head import TrackHead

        cfg = config or VGGTConfig()
        self.config = cfg
        self.family_mask = spatial_mask
        a = dict(cfg.aggregator)
        self.aggregator = VGGTAggregator(
            spatial_mask=spatial_mask, mask_hold_start=a["mask_hold_start"], mask_hold_end=a["mask_hold_end"],
            img_size=a["img_size"], patch_size=a["patch_size"], embed_dim=a["embed_dim"], depth=a["depth"],
            num_heads=a["num_heads"], mlp_ratio=a["mlp_ratio"], num_register_tokens=a["num_register_tokens"],
            patch_embed=a["patch_embed"], qk_norm=a["qk_norm"], rope_freq=a["rope_freq"],
            init_values=a["init_values"])
        dim = cfg.token_dim
        cam = cfg.camera_head
        self.camera_head = (CameraHead(dim_in=cam.get("dim_in", dim), trunk_depth=cam["trunk_depth"],
                                       pose_encoding_type=cam["pose_encoding_type"], num_heads=cam["num_heads"],
                                       mlp_ratio=cam["mlp_ratio"], init_values=cam["init_values"])
                            if cfg.heads["enable_camera"] else None)
        self.point_head = DPTHead(**cfg.dpt("point_head")) if cfg.heads["enable_point"] else None
        self.depth_head = DPTHead(**cfg.dpt("depth_head")) if cfg.heads["enable_depth"] else None
        self.track_head = (TrackHead(**{"dim_in": dim, "patch_size": cfg.patch_size, **cfg.track_head})
                           if cfg.heads["enable_track"] else None)

    def drop_head(self, name: str) -> None:
        """Make a head unavailable (e.g. a published file without ``track_head.*``)."""
        setattr(self, name, None)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, query_points: torch.Tensor | None = None,
                layers: Sequence[int] | None = None,
                heads: tuple[str, ...] = ("camera", "depth", "points")) -> dict[str, Any]:
        """images (B, S, 3, H, W) or (S, 3, H, W) in [0, 1] -> the official outputs.

        Returns ``tokens`` (list of ``depth`` tensors (B, S, P, 2C)), ``patch_start_idx``, ``pose_enc`` (B, S, 9)
        and ``pose_enc_list`` (one per refinement iteration), ``depth`` (B, S, H, W, 1), ``depth_conf``,
        ``world_points`` (B, S, H, W, 3), ``world_points_conf``; PAGE-4D adds ``attn_mask`` (B, S*P),
        ``attn_value`` (B, 1, S*P), ``mask_head_input`` (B*S, C, h, w) and ``mask_logit`` (B*S, 1, h, w); with
        ``query_points`` (B, N, 2) ``track``, ``vis``, ``conf``. Heads the model lacks are left out.
        """
        images = images[None] if images.dim() == 4 else images
        tokens, psi, mask = self.aggregator(images, layers=layers)
        out: dict[str, Any] = {"tokens": tokens, "patch_start_idx": psi}
        if mask is not None:
            out.update(attn_mask=mask["attn_mask"], attn_value=mask["attn_value"], mask_head_input=mask["input"],
                       mask_logit=mask["logit"])
        with torch.autocast(images.device.type, enabled=False):  # the official heads run in fp32
            if self.camera_head is not None and "camera" in heads:
                pose_list = self.camera_head(tokens, num_iterations=self.config.camera_iterations, causal=False)
                out["pose_enc"], out["pose_enc_list"] = pose_list[-1], pose_list
            if self.depth_head is not None and "depth" in heads:
                out["depth"], out["depth_conf"] = self.depth_head(tokens, images=images, patch_start_idx=psi)
            if self.point_head is not None and "points" in heads:
                out["world_points"], out["world_points_conf"] = self.point_head(tokens, images=images,
                                                                                patch_start_idx=psi)
            if self.track_head is not None and query_points is not None:
                out["track"], out["vis"], out["conf"] = self.track_head(tokens, images=images, patch_start_idx=psi,
                                                                        query_points=query_points)
        return out
