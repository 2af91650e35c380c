"""Point-track head of StreamVGGT: a feature-only DPT head followed by the iterative track predictor.

Parameter names match the official checkpoint (``feature_extractor.*``, ``tracker.*``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from model.streamvggt.heads.dpt_head import DPTHead
from model.streamvggt.heads.track_modules.base_track_predictor import BaseTrackerPredictor


class TrackHead(nn.Module):
    """Track query points through a sequence from aggregated tokens.

    The defaults build the released head (65.9 M parameters). ``out_channels``, ``intermediate_layer_idx``,
    ``tracker_depth`` and ``num_heads`` exist for small test configurations.

    Args:
        dim_in: token width (2 * embed_dim).
        patch_size: backbone patch size.
        features: feature channels of the extractor (= tracker latent_dim).
        iters: default refinement iterations.
        predict_conf: also predict per-point confidence.
        stride: feature-map stride (the extractor outputs H/2 x W/2).
        corr_levels, corr_radius: correlation pyramid levels and window radius.
        hidden_size: update-transformer width.
    """

    def __init__(self, dim_in: int = 2048, patch_size: int = 14, features: int = 128, iters: int = 4,
                 predict_conf: bool = True, stride: int = 2, corr_levels: int = 7, corr_radius: int = 4,
                 hidden_size: int = 384, out_channels: Sequence[int] = (256, 512, 1024, 1024),
                 intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23), tracker_depth: int = 6,
                 num_heads: int = 8) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.iters = iters
        self.feature_extractor = DPTHead(dim_in=dim_in, patch_size=patch_size, features=features,
                                         out_channels=out_channels, intermediate_layer_idx=intermediate_layer_idx,
                                         feature_only=True, down_ratio=2, pos_embed=False)
        self.tracker = BaseTrackerPredictor(stride=stride, corr_levels=corr_levels, corr_radius=corr_radius,
                                            latent_dim=features, hidden_size=hidden_size, depth=tracker_depth,
                                            predict_conf=predict_conf, num_heads=num_heads)

    def forward(self, tokens_list: Sequence[torch.Tensor], images: torch.Tensor | Sequence[int],
                patch_start_idx: int, query_points: torch.Tensor, iters: int | None = None,
                return_feat: bool = False, query_img_idx: int = 0, frames_chunk_size: int | None = 8):
        """Track ``query_points`` (B, N, 2) pixel (x, y) of frame ``query_img_idx`` through all S frames.

        Args:
            tokens_list: token layers (B, S, P, dim_in) (indexed by ``intermediate_layer_idx``).
            images: (B, S, 3, H, W) images, or that shape (only the shape is read).
            patch_start_idx: first patch token index (5).
            query_points: (B, N, 2) in input pixels.
            iters: refinement iterations (default ``self.iters``).

        Returns:
            ``(coord_preds, vis, conf)``: list of ``iters`` tensors (B, S, N, 2) in input pixels, visibility
            (B, S, N) and confidence (B, S, N) in [0, 1] (conf is None without ``predict_conf``); with
            ``return_feat`` also the track features, see ``BaseTrackerPredictor.forward``.
        """
        if query_points is None:
            raise ValueError("TrackHead needs query_points (B, N, 2) in input pixel coordinates")
        fmaps = self.feature_extractor(tokens_list, images, patch_start_idx, frames_chunk_size=frames_chunk_size)
        return self.tracker(query_points=query_points, fmaps=fmaps, iters=self.iters if iters is None else iters,
                            return_feat=return_feat, query_img_idx=query_img_idx)
