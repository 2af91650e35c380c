"""Camera head: iterative refinement of a 9-d pose encoding from the camera tokens (keys as official).

Pose encoding ``absT_quaR_FoV``: [t (3), quaternion XYZW (4), fov_h, fov_w]; translation and quaternion use a
linear activation, the field of view a ReLU. Convert with ``model.streamvggt.pose``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.streamvggt.cache import CameraCache, frame_causal_attention
from model.streamvggt.layers import Block, Mlp


def activate_pose(pose_enc: torch.Tensor) -> torch.Tensor:
    """Linear translation and quaternion, ReLU field of view. (..., 9) -> (..., 9)."""
    return torch.cat([pose_enc[..., :7], F.relu(pose_enc[..., 7:])], dim=-1)


def nudge_field_of_view(head: CameraHead) -> None:
    """Make a random tiny camera head predict a field of view of about 1 radian: with plain random weights the
    ReLU on the field of view gives 0 for most seeds (infinite focal lengths, every point cloud on a line)."""
    with torch.no_grad():
        last = head.pose_branch.fc2  # pose encoding: translation 3, quaternion 4, field of view 2
        last.weight[7:].mul_(0.01)
        last.bias[7:].fill_(0.25)  # summed over the 4 refinement iterations


class CameraHead(nn.Module):
    """Official camera head: token_norm -> ``num_iterations`` x (AdaLN modulation by the current estimate ->
    trunk of attention blocks across frames -> trunk_norm -> pose_branch delta).

    Batched mode: the trunk attends causally over frames (frame t sees frames <= t). Streaming mode
    (``cache=``): frames are processed one after another with the official cache quirk, see
    :class:`~model.streamvggt.cache.CameraCache`.
    """

    def __init__(self, dim_in: int = 2048, trunk_depth: int = 4, pose_encoding_type: str = "absT_quaR_FoV",
                 num_heads: int = 16, mlp_ratio: float = 4.0, init_values: float = 0.01) -> None:
        super().__init__()
        if pose_encoding_type != "absT_quaR_FoV":
            raise ValueError(f"unsupported pose encoding {pose_encoding_type!r}; only 'absT_quaR_FoV' exists")
        self.target_dim = 9
        self.trunk_depth = trunk_depth
        self.trunk = nn.Sequential(*[Block(dim_in, num_heads, mlp_ratio, init_values=init_values)
                                     for _ in range(trunk_depth)])
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, self.target_dim))
        self.embed_pose = nn.Linear(self.target_dim, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in, bias=True))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, self.target_dim)

    def new_cache(self, window: int | None = None, num_iterations: int = 4) -> CameraCache:
        """An empty streaming cache for this head (``window`` = max past frames attended, None = all)."""
        return CameraCache(self.trunk_depth, window, num_iterations)

    def forward(self, tokens_list: list[torch.Tensor], num_iterations: int = 4,
                cache: CameraCache | None = None, causal: bool = True) -> list[torch.Tensor]:
        """tokens_list: aggregator outputs, each (B, S, P, 2C); uses the last one, token 0 (camera token).

        Returns ``num_iterations`` activated pose encodings, each (B, S, 9); the last is the prediction.
        With ``cache``, the S frames follow the frames already streamed and are processed one at a time.
        ``causal=False`` (VGGT, PAGE-4D): the trunk attends over every frame.
        """
        pose_tokens = self.token_norm(tokens_list[-1][:, :, 0])
        if cache is None and not causal:
            return self._refine(pose_tokens, num_iterations, [None] * self.trunk_depth)
        if cache is None:
            s = pose_tokens.shape[1]
            frames = list(range(s))

            def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                return frame_causal_attention(q, k, v, frames, frames, 1)

            return self._refine(pose_tokens, num_iterations, [attend] * self.trunk_depth)
        if cache.entries_per_frame != num_iterations:
            raise ValueError(f"camera cache made for {cache.entries_per_frame} iterations, got {num_iterations}")
        per_frame = []
        for i in range(pose_tokens.shape[1]):
            t = cache.num_frames_seen
            attends = [self._cached_attend(layer, t, cache.window) for layer in cache.layers]
            per_frame.append(self._refine(pose_tokens[:, i:i + 1], num_iterations, attends))
            cache.num_frames_seen += 1
        return [torch.cat([f[it] for f in per_frame], dim=1) for it in range(num_iterations)]

    @staticmethod
    def _cached_attend(layer, t: int, window: int | None):
        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return layer.attend(q, k, v, [t], window, evict_after=False)
        return attend

    def _refine(self, pose_tokens: torch.Tensor, num_iterations: int, attends: list) -> list[torch.Tensor]:
        b, s, _ = pose_tokens.shape
        pred = None
        outputs = []
        normed = self.adaln_norm(pose_tokens)
        for _ in range(num_iterations):
            if pred is None:
                cond = self.embed_pose(self.empty_pose_tokens.expand(b, s, -1))
            else:
                cond = self.embed_pose(pred.detach())
            shift, scale, gate = self.poseLN_modulation(cond).chunk(3, dim=-1)
            x = gate * (normed * (1 + scale) + shift) + pose_tokens
            for blk, attend in zip(self.trunk, attends, strict=True):
                x = blk(x, attend=attend)
            delta = self.pose_branch(self.trunk_norm(x))
            pred = delta if pred is None else pred + delta
            outputs.append(activate_pose(pred))
        return outputs
