"""The StreamVGGT model: aggregator + camera, depth, point and track heads (checkpoint-identical keys).

Entry points run under ``torch.inference_mode`` (the backbone is frozen in this project):
``forward(images)`` (one batched block-causal pass), ``stream(frames, state)`` (one frame or a chunk at a time
with key/value caches; equals the batched pass up to float rounding), ``from_pretrained`` and ``tiny``.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.streamvggt.aggregator import Aggregator
from model.streamvggt.cache import AggregatorCache, CameraCache
from model.streamvggt.config import StreamVGGTConfig
from model.streamvggt.heads.camera_head import CameraHead, nudge_field_of_view
from model.streamvggt.loading import load_strict, read_state_dict, resolve_checkpoint
from utils.device import autocast

logger = logging.getLogger(__name__)


@dataclass
class StreamState:
    """Streaming state of one video: the aggregator's and the camera head's caches."""

    aggregator: AggregatorCache
    camera: CameraCache

    @property
    def num_frames_seen(self) -> int:
        """Frames processed so far in this stream."""
        return self.aggregator.num_frames_seen


class StreamVGGT(nn.Module):
    """StreamVGGT with children ``aggregator, camera_head, point_head, depth_head, track_head``.

    ``StreamVGGT()`` builds the official 1.26 B-parameter model (build it under ``torch.device("meta")`` to
    inspect keys without allocating); ``StreamVGGT(StreamVGGTConfig.tiny())`` the tiny test model.
    """

    #: causal with a key/value cache: any length streams through ``stream`` / the aggregator cache
    streaming = True

    def __init__(self, config: StreamVGGTConfig | None = None) -> None:
        super().__init__()
        from model.streamvggt.heads.dpt_head import DPTHead
        from model.streamvggt.heads.track_head import TrackHead

        cfg = config or StreamVGGTConfig()
        self.config = cfg
        dim = cfg.token_dim
        dpt: dict[str, Any] = dict(patch_size=cfg.patch_size, features=cfg.dpt_features, out_channels=tuple(cfg.dpt_out_channels),
                   intermediate_layer_idx=tuple(cfg.dpt_layers))
        self.aggregator = Aggregator.from_config(cfg)
        self.camera_head = CameraHead(dim_in=dim, trunk_depth=cfg.camera_trunk_depth, num_heads=cfg.camera_num_heads,
                                      mlp_ratio=cfg.mlp_ratio, init_values=cfg.init_values)
        self.point_head = DPTHead(dim_in=dim, output_dim=4, activation="inv_log", conf_activation="expp1", **dpt)
        self.depth_head = DPTHead(dim_in=dim, output_dim=2, activation="exp", conf_activation="expp1", **dpt)
        self.track_head = TrackHead(dim_in=dim, patch_size=cfg.patch_size, features=cfg.track_features,
                                    hidden_size=cfg.track_hidden_size, corr_levels=cfg.track_corr_levels,
                                    corr_radius=cfg.track_corr_radius, out_channels=tuple(cfg.dpt_out_channels),
                                    intermediate_layer_idx=tuple(cfg.dpt_layers))

    # ------------------------------------------------------------------ construction / loading
    @classmethod
    def tiny(cls, seed: int = 0) -> StreamVGGT:
        """Seeded random tiny model (conv patch embed, width 64, 4 blocks) in eval mode.

        Its camera head is nudged to predict a field of view of about 1 radian (the last layer's field-of-view
        outputs get a positive bias and 1% of their random weights): with plain random weights the ReLU on the
        field of view gives 0 for most seeds, i.e. infinite focal lengths, and every frame's point cloud collapses
        onto a line. The tokens (all the decoder reads) are unaffected.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(StreamVGGTConfig.tiny())
        nudge_field_of_view(model.camera_head)
        return model.eval()

    @classmethod
    def from_pretrained(cls, source: str | Path | None = None, config: StreamVGGTConfig | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> StreamVGGT:
        """Load weights strictly from a ``.pth``/``.safetensors`` file, a folder, or a Hub repo id
        (default: ``ckpt/streamvggt/checkpoints.pth`` if present, else ``lch01/StreamVGGT``).

        The model is built on the meta device and the weights are assigned, so memory holds one copy.
        Raises :class:`~model.streamvggt.loading.WeightsNotFoundError` with the download instruction when the
        weights are missing, ``RuntimeError`` naming the mismatching keys when they do not fit ``config``.
        """
        path = resolve_checkpoint(source)
        state_dict = read_state_dict(path)
        cfg = config or StreamVGGTConfig()
        with torch.device("meta"):
            model = cls(cfg)
        load_strict(model, state_dict, source=str(path), assign=True)
        leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
        if leftover:  # a module with non-persistent buffers: rebuild it for real and load normally
            model = cls(cfg)
            load_strict(model, state_dict, source=str(path))
        logger.info("loaded StreamVGGT weights from %s", path)
        return model.to(device=device, dtype=dtype).eval()

    # ------------------------------------------------------------------ inference
    def new_state(self, window: int | None = None) -> StreamState:
        """Empty streaming state. ``window``: each frame attends to itself plus at most ``window`` previous
        frames (the published extraction uses 128); None = unbounded."""
        return StreamState(self.aggregator.new_cache(window),
                           self.camera_head.new_cache(window, self.config.camera_iterations))

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, window: int | None = None, autocast_dtype: torch.dtype | None = None,
                query_points: torch.Tensor | None = None, heads: tuple[str, ...] = ("camera", "depth", "points"),
                ) -> dict[str, Any]:
        """One batched pass over S frames with the (windowed) block-causal mask.

        Args:
            images: (B, S, 3, H, W) or (S, 3, H, W) in [0, 1].
            autocast_dtype: torch.bfloat16/float16 runs the aggregator under CUDA autocast (heads stay fp32).
            query_points: optional (B, N, 2) pixels of frame 0 to track (runs the track head).
            heads: which of "camera", "depth", "points" to run.
        Returns a dict: ``tokens`` (list of depth tensors (B, S, P, 2C)), ``patch_start_idx``, ``pose_enc``
        (B, S, 9), ``depth`` (B, S, H, W, 1), ``depth_conf`` (B, S, H, W), ``world_points`` (B, S, H, W, 3),
        ``world_points_conf`` (B, S, H, W), and with query points ``track``, ``vis``, ``conf``.
        """
        images = images[None] if images.dim() == 4 else images
        with autocast(images.device, autocast_dtype or torch.float32):
            tokens, psi = self.aggregator(images, window=window)
        return self._run_heads(tokens, psi, images, None, query_points, heads)

    @torch.inference_mode()
    def stream(self, frames: torch.Tensor, state: StreamState, autocast_dtype: torch.dtype | None = None,
               heads: tuple[str, ...] = ("camera", "depth", "points")) -> dict[str, Any]:
        """Process the next frame(s) of a stream: (B, 3, H, W) one frame, or (B, S, 3, H, W) a chunk.

        Updates ``state`` in place; returns the same dict as :meth:`forward` for these frames only. The camera
        head uses its own cache with the official quirk (4 entries per frame).
        """
        frames = frames[:, None] if frames.dim() == 4 else frames
        with autocast(frames.device, autocast_dtype or torch.float32):
            tokens, psi = self.aggregator(frames, cache=state.aggregator)
        return self._run_heads(tokens, psi, frames, state.camera, None, heads)

    def _run_heads(self, tokens: list[torch.Tensor], psi: int, images: torch.Tensor,
                   camera_cache: CameraCache | None, query_points: torch.Tensor | None,
                   heads: tuple[str, ...]) -> dict[str, Any]:
        unknown = set(heads) - {"camera", "depth", "points"}
        if unknown:
            raise ValueError(f"unknown heads {sorted(unknown)}; choose from camera, depth, points")
        out: dict[str, Any] = {"tokens": tokens, "patch_start_idx": psi}
        no_autocast = (torch.autocast(images.device.type, enabled=False) if images.device.type in ("cuda", "cpu")
                       else contextlib.nullcontext())
        with no_autocast:  # the official heads run in fp32
            head_dtype = self.camera_head.token_norm.weight.dtype  # fp32 unless the whole model was cast
            ftok = [t.to(head_dtype) for t in tokens]
            if "camera" in heads:
                pose_list = self.camera_head(ftok, num_iterations=self.config.camera_iterations, cache=camera_cache)
                out["pose_enc"] = pose_list[-1]
                out["pose_enc_list"] = pose_list
            if "depth" in heads:
                out["depth"], out["depth_conf"] = self.depth_head(ftok, images=images, patch_start_idx=psi)
            if "points" in heads:
                out["world_points"], out["world_points_conf"] = self.point_head(ftok, images=images,
                                                                                patch_start_idx=psi)
            if query_points is not None:
                out["track"], out["vis"], out["conf"] = self.track_head(ftok, images=images, patch_start_idx=psi,
                                                                        query_points=query_points)
        return out
