"""Iterative point-track predictor (CoTracker / VGGSfM style) used by the StreamVGGT track head."""

from __future__ import annotations

import torch
from torch import nn

from model.streamvggt.heads.track_modules.blocks import CorrBlock, EfficientUpdateFormer
from model.streamvggt.heads.track_modules.utils import (
    flow_embedding,
    grid_sincos_pos_embed,
    sample_features4d,
)
from model.streamvggt.layers import Mlp


class BaseTrackerPredictor(nn.Module):
    """Refines tracks of query points over S frames from per-frame feature maps.

    Each iteration samples a correlation pyramid around the current coordinates, embeds the motion relative to
    the query frame, and lets an ``EfficientUpdateFormer`` predict coordinate and feature updates.

    Args:
        stride: feature-map stride relative to the input pixels the queries are given in.
        corr_levels, corr_radius: correlation pyramid depth and window radius.
        latent_dim: feature channels C of the maps.
        hidden_size: update-transformer width.
        use_spaceatt: attention across tracks (through virtual tracks).
        depth: number of time (and space) blocks.
        max_scale: normaliser of the raw flow appended to its embedding.
        predict_conf: also predict a per-point confidence.
    """

    def __init__(self, stride: int = 1, corr_levels: int = 5, corr_radius: int = 4, latent_dim: int = 128,
                 hidden_size: int = 384, use_spaceatt: bool = True, depth: int = 6, max_scale: int = 518,
                 predict_conf: bool = True, num_heads: int = 8, num_virtual_tracks: int = 64) -> None:
        super().__init__()
        self.stride = stride
        self.latent_dim = latent_dim
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.hidden_size = hidden_size
        self.max_scale = max_scale
        self.predict_conf = predict_conf
        self.flows_emb_dim = latent_dim // 2

        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden_size, latent_dim)
        # flow embedding (2 * flows_emb_dim + 4) + correlation (C) + track feature (C)
        self.transformer_dim = 3 * latent_dim + 4
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = EfficientUpdateFormer(
            space_depth=depth if use_spaceatt else 0, time_depth=depth, input_dim=self.transformer_dim,
            hidden_size=hidden_size, num_heads=num_heads, output_dim=latent_dim + 2, mlp_ratio=4.0,
            add_space_attn=use_spaceatt, num_virtual_tracks=num_virtual_tracks)
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        if predict_conf:
            self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def forward(self, query_points: torch.Tensor, fmaps: torch.Tensor, iters: int = 6, return_feat: bool = False,
                down_ratio: float = 1, apply_sigmoid: bool = True, query_img_idx: int = 0):
        """Track query points through all frames.

        Args:
            query_points: (B, N, 2) pixel (x, y) in the input image of frame ``query_img_idx``.
            fmaps: (B, S, C, h, w) feature maps at 1/(stride*down_ratio) of the input resolution.
            iters: refinement iterations.
            return_feat: also return the final track features (B, S, N, C) and the query features (B, N, C).
            down_ratio: extra downsampling of the maps relative to the query pixel units.
            apply_sigmoid: return probabilities (else logits) for visibility and confidence.
            query_img_idx: frame whose features describe the queries.

        Returns:
            ``(coord_preds, vis, conf)``: ``iters`` tensors (B, S, N, 2) in input pixels, (B, S, N),
            (B, S, N) or None; with ``return_feat``: ``(coord_preds, vis, track_feats, query_feat, conf)``.
        """
        B, N, D = query_points.shape
        _, S, C, h, w = fmaps.shape
        if D != 2:
            raise ValueError(f"query_points must be (B, N, 2), got {tuple(query_points.shape)}")
        if C != self.latent_dim:
            raise ValueError(f"fmaps have {C} channels but the tracker expects latent_dim={self.latent_dim}")

        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        scale = float(self.stride) * (float(down_ratio) if down_ratio > 1 else 1.0)
        query = query_points.to(fmaps.dtype) / scale

        coords = query.reshape(B, 1, N, 2).repeat(1, S, 1, 1)  # (B, S, N, 2): start at the query positions
        query_feat = sample_features4d(fmaps[:, query_img_idx], query)  # (B, N, C)
        track_feats = query_feat.unsqueeze(1).repeat(1, S, 1, 1)  # (B, S, N, C)
        corr_fn = CorrBlock(fmaps, num_levels=self.corr_levels, radius=self.corr_radius)

        # 2-D sin/cos embedding of the query positions (same for every iteration).
        pos_embed = grid_sincos_pos_embed(self.transformer_dim, h, w, device=fmaps.device).to(fmaps.dtype)
        query_pos = sample_features4d(pos_embed.expand(B, -1, -1, -1), query).reshape(B * N, 1, -1)
        ref_token = torch.cat([self.query_ref_token[:, :1],
                               self.query_ref_token[:, 1:2].expand(-1, S - 1, -1)], dim=1)

        coord_preds = []
        for _ in range(iters):
            coords = coords.detach()
            corrs = corr_fn.corr_sample(track_feats, coords)  # (B, S, N, L)
            corrs = self.corr_mlp(corrs.permute(0, 2, 1, 3).reshape(B * N, S, -1))

            flows = (coords - coords[:, :1]).permute(0, 2, 1, 3).reshape(B * N, S, 2)
            flows_emb = flow_embedding(flows, self.flows_emb_dim).to(flows.dtype)
            flows_emb = torch.cat([flows_emb, flows / self.max_scale, flows / self.max_scale], dim=-1)

            feats_bn = track_feats.permute(0, 2, 1, 3).reshape(B * N, S, self.latent_dim)
            x = torch.cat([flows_emb, corrs, feats_bn], dim=2) + query_pos
            x = x + ref_token.to(dtype=x.dtype)

            delta = self.updateformer(x.reshape(B, N, S, -1)).reshape(B * N, S, -1)
            delta_coords, delta_feats = delta[..., :2], delta[..., 2:]

            feats_flat = feats_bn.reshape(B * N * S, self.latent_dim)
            feats_flat = self.ffeat_updater(self.ffeat_norm(delta_feats.reshape(B * N * S, self.latent_dim))) + feats_flat
            track_feats = feats_flat.reshape(B, N, S, self.latent_dim).permute(0, 2, 1, 3)

            coords = coords + delta_coords.reshape(B, N, S, 2).permute(0, 2, 1, 3)
            # The query frame's coordinates stay fixed at the query points.
            coords = torch.cat([query[:, None], coords[:, 1:]], dim=1)
            coord_preds.append(coords * scale)

        flat = track_feats.reshape(B * S * N, self.latent_dim)
        vis = self.vis_predictor(flat).reshape(B, S, N)
        conf = self.conf_predictor(flat).reshape(B, S, N) if self.predict_conf else None
        if apply_sigmoid:
            vis = torch.sigmoid(vis)
            conf = torch.sigmoid(conf) if conf is not None else None
        if return_feat:
            return coord_preds, vis, track_feats, query_feat, conf
        return coord_preds, vis, conf
