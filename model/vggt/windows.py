"""Long videos through a windowed (non-streaming) backbone: overlapping windows joined by Sim(3).

Global attention costs memory that grows with the square of the frames it sees, so a video runs in windows of
``window`` frames; each window after the first starts with the last ``overlap`` frames of the one before. The
overlapping frames are seen twice: their depth, unprojected with each window's cameras, gives 3-D point pairs,
and the Sim(3) that maps the new window's world onto the joint world (Umeyama, ``evo.core.geometry``) carries its
cameras, depth scale and points over. A video no longer than one window is exactly one forward pass.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from model.streamvggt.geometry import depth_to_world_points
from model.streamvggt.pose import pose_encoding_to_extri_intri

logger = logging.getLogger(__name__)

#: at most this many point pairs (a regular subsample) go into the Umeyama fit
MAX_PAIRS = 4096


@dataclass
class Sim3:
    """``x_joint = scale * R @ x_window + t``."""

    scale: float
    rotation: torch.Tensor  # (3, 3)
    translation: torch.Tensor  # (3,)

    @classmethod
    def identity(cls) -> Sim3:
        return cls(1.0, torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))

    @classmethod
    def fit(cls, source: torch.Tensor, target: torch.Tensor) -> Sim3:
        """Least-squares Sim(3) taking ``source`` (N, 3) points onto ``target`` (N, 3) (Umeyama, with scale)."""
        from evo.core.geometry import GeometryException, umeyama_alignment

        src = source.double().reshape(-1, 3)
        dst = target.double().reshape(-1, 3)
        ok = torch.isfinite(src).all(1) & torch.isfinite(dst).all(1)
        src, dst = src[ok], dst[ok]
        if len(src) > MAX_PAIRS:
            pick = torch.linspace(0, len(src) - 1, MAX_PAIRS).round().long()
            src, dst = src[pick], dst[pick]
        if len(src) >= 3:
            try:
                with np.errstate(all="ignore"):
                    r, t, c = umeyama_alignment(src.T.numpy(), dst.T.numpy(), with_scale=True)
            except GeometryException:  # degenerate covariance (all points on a line or at one place)
                c = float("nan")
            if np.isfinite(c) and c > 0 and np.isfinite(r).all() and np.isfinite(t).all():
                return cls(float(c), torch.from_numpy(np.asarray(r)), torch.from_numpy(np.asarray(t)))
        logger.warning("the window overlap gives no usable Sim(3) (%d valid point pairs, degenerate geometry): "
                       "this window keeps its own world (cameras may jump at its border)", len(src))
        return cls.identity()

    def extrinsics(self, extr: torch.Tensor) -> torch.Tensor:
        """Camera-from-world (..., 3, 4) of the window's world -> of the joint world (camera units scaled)."""
        rot = extr[..., :3].double() @ self.rotation.T
        trans = self.scale * extr[..., 3].double() - (rot @ self.translation[:, None])[..., 0]
        return torch.cat([rot, trans[..., None]], dim=-1).to(extr.dtype)

    def points(self, pts: torch.Tensor) -> torch.Tensor:
        """World points (..., 3) of the window -> joint world."""
        return (self.scale * pts.double() @ self.rotation.T + self.translation).to(pts.dtype)


class WindowedRunner:
    """Feeds a video in order through a windowed backbone (a :class:`~model.vggt.vggt.VGGT`).

    Call :meth:`step` with the next ``window - overlap`` frames (fewer at the end; the first call may give
    ``window``); it returns their outputs in the joint world of the first window. Memory: one window.
    """

    def __init__(self, model: torch.nn.Module, window: int = 16, overlap: int = 4,
                 layers: Sequence[int] | None = None, heads: tuple[str, ...] = ("camera", "depth")) -> None:
        if window < 1 or not 0 <= overlap < window:
            raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window {window}, overlap {overlap}")
        if overlap == 0 and "camera" in heads:
            raise ValueError("windows without overlap cannot be aligned: use --overlap >= 1")
        self.model, self.window, self.overlap = model, window, overlap
        self.layers, self.heads = layers, heads
        self._tail: dict[str, Any] | None = None  # the last `overlap` frames: images, joint points (None: no geometry)

    @property
    def new_frames_per_step(self) -> int:
        return self.window - self.overlap

    @torch.inference_mode()
    def step(self, images: torch.Tensor) -> dict[str, Any]:
        """images (S, 3, H, W) in [0, 1], the next frames. Returns ``tokens`` (list, per layer (S, P, 2C) or
        None), ``patch_start_idx``, and with the camera/depth heads ``pose_enc`` (S, 9, the window's own world),
        ``extrinsics`` (S, 3, 4) and ``intrinsics`` (S, 3, 3), ``depth`` and ``depth_conf`` (S, H, W), all in the
        joint world; PAGE-4D adds ``attn_value`` (S, P); ``sim3`` is the window's alignment."""
        s_new = images.shape[0]
        lead = 0
        if self._tail is not None:
            lead = self._tail["images"].shape[0]
            images = torch.cat([self._tail["images"], images])
        if images.shape[0] > self.window and self._tail is not None:
            raise ValueError(f"{s_new} new frames + {lead} overlap exceed the window of {self.window}")
        out = self.model(images[None], layers=self.layers, heads=self.heads)
        h, w = images.shape[-2:]
        res: dict[str, Any] = {"tokens": [t[0, lead:] if t is not None else None for t in out["tokens"]],
                               "patch_start_idx": out["patch_start_idx"]}
        if "attn_value" in out:
            p = out["tokens"][-1].shape[2]
            res["attn_value"] = out["attn_value"].reshape(images.shape[0], p)[lead:]
        sim = Sim3.identity()
        if "pose_enc" in out and "depth" in out:
            extr, intr = pose_encoding_to_extri_intri(out["pose_enc"][0].float(), (h, w))
            depth = out["depth"][0, ..., 0].float()
            assert intr is not None  # built by default
            pts = depth_to_world_points(depth, extr, intr)  # (S, H, W, 3), this window's world
            if self._tail is not None:
                sim = Sim3.fit(pts[:lead], self._tail["points"])
                extr, depth, pts = sim.extrinsics(extr), depth * sim.scale, sim.points(pts)
            res.update(pose_enc=out["pose_enc"][0, lead:], extrinsics=extr[lead:], intrinsics=intr[lead:],
                       depth=depth[lead:], depth_conf=out["depth_conf"][0, lead:].float())
            keep_pts = pts[-self.overlap:] if self.overlap else None
        else:
            keep_pts = None
        res["sim3"] = sim
        if self.overlap:
            self._tail = {"images": images[-self.overlap:], "points": keep_pts}
        return res
