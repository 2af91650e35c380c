"""Text queries over every frame of an inference output, for the viewer.

Nothing here re-implements the query maths: the relevancy is :class:`eval.query.relevancy.RelevancyModel`'s (LERF
against the canonical negatives), interpolated from :class:`eval.query.relevancy.LatentGrid` over the fields' latent box
exactly as ``eval.query`` does by default (or per pixel with ``exact=True``, or where the grid does not apply);
masks, level choice and the normalised heat are :mod:`eval.query.masks`' (through :func:`eval.query.batch_masks.frame_masks`
with the settings ``eval.query`` uses: on the exact path bit for bit
:func:`eval.query.masks.masks_from_relevancy` per frame, on the grid path ``exact_ties=False``); the time-sensitive
decision is :func:`eval.protocol.metrics.temporal_predictions` over per-frame scores computed as ``eval.protocol.runner`` scores a
state query (mean cosine of the decoded video field over the query's raw mask). So a frame's mask here is the
mask ``python -m eval.query`` writes for the same fields, text, level and threshold.

Frames are processed in small batches in an order the caller chooses (the viewer starts at the frame on screen),
and ``on_batch`` is called after each batch, so the view updates long before the last frame is done.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from eval.query import BATCH_FRAMES
from eval.query.batch_masks import frame_masks
from eval.query.masks import MASK_THRESHOLD, normalize_relevancy
from eval.query.relevancy import GRID_SIZE, MAX_GRID_DIM, LatentGrid, RelevancyModel, latent_range
from inference.outputs import LEVELS, OutputLayout, read_fields

log = logging.getLogger("viewer")

Decoder = Callable[[torch.Tensor], torch.Tensor]
LEVEL_CHOICES = ("auto", *LEVELS)


@dataclass
class FrameResult:
    """One frame's answer to one query: chosen level index, max of its smoothed relevancy (``score``), the cleaned
    mask (H, W) bool, the mask before the cleanup (``raw``, the one the time-sensitive protocol scores) and the
    normalised smoothed relevancy as uint8 (``heat``, what ``eval.query``'s overlays blend)."""

    level: int
    score: float
    mask: np.ndarray
    raw: np.ndarray
    heat: np.ndarray


@dataclass
class QueryResult:
    """A query over the frames computed so far (``frames`` fills up batch by batch)."""

    text: str
    level: str
    threshold: float
    frames: dict[str, FrameResult] = field(default_factory=dict)
    seconds: float = 0.0
    state_scores: dict[str, float] | None = None  # time-sensitive score per frame (with a video head)
    state_holds: dict[str, bool] | None = None


class QueryEngine:
    """Relevancy, masks and time-sensitive scores of text queries over the frames of one inference output.

    Args:
        layout: the inference output; keys: its frames (all with fields).
        encode_text: ``list[str] -> (N, D)`` unit embeddings (the flags of :mod:`eval.query.text`).
        decode: autoencoder decoder ``(P, k) -> (P, D)`` (None for D-dim fields).
        exact: decode every pixel (eval.query ``--exact``) instead of the latent grid.
        video_decode: decoder of the time-sensitive ``video`` field (None: used as stored).
        cache_mb: keep the fields of at most this many MB in memory (the rest is re-read per query).
    """

    def __init__(self, layout: OutputLayout, keys: Sequence[str], encode_text: Callable[[list[str]], torch.Tensor],
                 decode: Decoder | None = None, levels: Sequence[str] = LEVELS, exact: bool = False,
                 grid_size: int = GRID_SIZE, video_decode: Decoder | None = None, cache_mb: float = 1024.0,
                 batch: int = BATCH_FRAMES) -> None:
        self.layout = layout
        self.keys = list(keys)
        self.levels = tuple(levels)
        self.decode = decode
        self.video_decode = video_decode
        self.model = RelevancyModel(encode_text)
        self.exact = exact or decode is None
        self.grid_size = grid_size
        self.batch = max(1, int(batch))
        self._cache: dict[str, torch.Tensor] = {}
        self._cache_left = cache_mb * 2**20
        self._grid = None
        self._grid_checked = False
        self._volumes: dict[str, object] = {}

    # ------------------------------------------------------------------ fields
    def latents(self, key: str) -> torch.Tensor:
        """(L, H, W, k) float32 fields of a frame (as eval.query stacks them)."""
        x = self._cache.get(key)
        if x is not None:
            return x
        f, _ = read_fields(self.layout.fields(key), names=self.levels)
        missing = [lvl for lvl in self.levels if lvl not in f]
        if missing:
            raise KeyError(f"{self.layout.fields(key)} has no {', '.join(missing)} field")
        x = torch.stack([f[lvl] for lvl in self.levels]).permute(0, 2, 3, 1).float().contiguous()
        if x.numel() * 4 <= self._cache_left:
            self._cache[key] = x
            self._cache_left -= x.numel() * 4
        return x

    def video(self, key: str) -> torch.Tensor | None:
        """(H, W, c) time-sensitive field of a frame, or None."""
        f, _ = read_fields(self.layout.fields(key), names=("video",))
        return f["video"].permute(1, 2, 0).float() if "video" in f else None

    # ------------------------------------------------------------------ relevancy
    def grid(self):
        """The :class:`LatentGrid` over the latent box of all frames (built once), or None for the exact path."""
        if self.exact:
            return None
        if not self._grid_checked:
            self._grid_checked = True
            lo = hi = None
            for key in self.keys:
                x = self.latents(key)
                if x.shape[-1] > MAX_GRID_DIM:
                    log.info("fields have %d dims (> %d): exact per-pixel relevancy", x.shape[-1], MAX_GRID_DIM)
                    self.exact = True
                    return None
                a, b = latent_range(x)
                lo = a if lo is None else torch.minimum(lo, a)
                hi = b if hi is None else torch.maximum(hi, b)
            if lo is None or not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
                log.warning("non-finite field values: exact per-pixel relevancy")
                self.exact = True
                return None
            t = time.perf_counter()
            self._grid = LatentGrid(self.decode, lo, hi, self.grid_size)
            log.info("latent grid %d^%d built in %.2f s", self.grid_size, self._grid.k, time.perf_counter() - t)
        return self._grid

    def relevancy(self, text: str, keys: Sequence[str]) -> torch.Tensor:
        """(B, L, H, W) relevancy of ``text`` on frames ``keys`` (all of one size)."""
        feats = torch.stack([self.latents(k) for k in keys])
        grid = self.grid()
        if grid is not None:
            return self._grid_relevancy(grid, text, feats)
        return torch.stack([self.model.relevancy(f, [text], decode=self.decode)[0] for f in feats])

    def _grid_relevancy(self, grid, text: str, feats: torch.Tensor) -> torch.Tensor:
        """``text``'s relevancy of (..., k) latents through the grid's logit volume (kept per text)."""
        vol = self._volumes.get(text)
        if vol is None:
            pos = self.model.embed([text])
            if hasattr(grid, "volume"):  # lazily decoded grid: the volume fills in as cells get covered
                vol = grid.volume(pos, self.model.negatives)
            else:  # dense grid
                vol = grid.logit_volume(pos, self.model.negatives)
            self._volumes[text] = vol
        if hasattr(vol, "relevancy"):
            return vol.relevancy(feats, self.model.temperature)[0]
        return grid.relevancy(vol, feats, self.model.temperature)[0]

    # ------------------------------------------------------------------ masks
    def _masks(self, rel: torch.Tensor, threshold: float, level: int | None) -> list[FrameResult]:
        """Relevancy ``(B, L, H, W)`` of a batch of frames -> each frame's masks (:func:`frame_masks`)."""
        # as eval.query: the grid's approximate relevancy takes the approximate level choice and pool
        fm = frame_masks(rel, threshold=threshold, level=level, exact_ties=self.exact)
        heat = (normalize_relevancy(fm.smoothed) * 255).round().to(torch.uint8).numpy()
        return [FrameResult(int(fm.level[b]), float(fm.scores[b]), fm.clean[b].numpy(), fm.raw[b].numpy(), heat[b])
                for b in range(rel.shape[0])]

    def run(self, text: str, level: str = "auto", threshold: float | None = None,
            order: Sequence[str] | None = None,
            on_batch: Callable[[QueryResult, list[str]], None] | None = None,
            cancelled: Callable[[], bool] | None = None, first_alone: bool | None = None) -> QueryResult:
        """Masks of ``text`` on every frame (in ``order``; default frame order), batch by batch.

        ``first_alone``: compute the first frame of ``order`` on its own first (the frame on screen updates at
        once); default: when ``order`` does not start at the first frame (in frame order the batches are
        eval.query's)."""
        if level not in LEVEL_CHOICES:
            raise ValueError(f"level {level!r} is not one of {', '.join(LEVEL_CHOICES)}")
        thr = MASK_THRESHOLD if threshold is None else float(threshold)
        fixed = None if level == "auto" else self.levels.index(level)
        keys = list(order) if order is not None else self.keys
        if first_alone is None:
            first_alone = bool(keys) and keys[0] != self.keys[0]
        res = QueryResult(text, level, thr)
        t0 = time.perf_counter()
        with torch.no_grad():
            self.model.embed([text])
            i = 0
            while i < len(keys):
                if cancelled is not None and cancelled():
                    break
                batch = [keys[i]]
                shape = self.latents(keys[i]).shape
                size = self.batch if i > 0 or first_alone is False else 1
                while (len(batch) < size and i + len(batch) < len(keys)
                       and self.latents(keys[i + len(batch)]).shape == shape):
                    batch.append(keys[i + len(batch)])
                i += len(batch)
                rel = self.relevancy(text, batch)
                for key, fr in zip(batch, self._masks(rel, thr, fixed), strict=True):
                    res.frames[key] = fr
                res.seconds = time.perf_counter() - t0
                if on_batch is not None:
                    on_batch(res, batch)
        return res

    # ------------------------------------------------------------------ time-sensitive
    def has_video(self) -> bool:
        return any(self.video(k) is not None for k in self.keys[:1])

    def state(self, res: QueryResult) -> tuple[dict[str, float], dict[str, bool]]:
        """Per frame (in frame order): the time-sensitive score of ``res.text`` (``eval.protocol.runner``'s: mean cosine
        between the decoded video field over the query's raw mask and the text embedding, 0 for an empty mask) and
        whether the state holds (:func:`eval.protocol.metrics.temporal_predictions`: smoothed score >= the mean score)."""
        from eval.protocol.metrics import temporal_predictions

        q = F.normalize(self.model.embed([res.text])[0], dim=0)
        keys = [k for k in self.keys if k in res.frames]
        scores = []
        with torch.no_grad():
            for key in keys:
                sel = torch.from_numpy(res.frames[key].raw)
                v = self.video(key)
                if v is None or not bool(sel.any()):
                    scores.append(0.0)
                    continue
                feats = v[sel]
                if self.video_decode is not None:
                    feats = self.video_decode(feats)
                if feats.shape[-1] != q.shape[0]:
                    raise ValueError(f"the video field has {feats.shape[-1]} dims but the text embeddings "
                                     f"{q.shape[0]}: pass --video-autoencoder")
                scores.append(float((F.normalize(feats.float(), dim=-1) @ q).mean()))
        holds = temporal_predictions(np.asarray(scores, dtype=np.float32)) if scores else np.zeros(0, bool)
        res.state_scores = dict(zip(keys, scores, strict=True))
        res.state_holds = {k: bool(h) for k, h in zip(keys, holds, strict=True)}
        return res.state_scores, res.state_holds
