"""Key/value caches for streaming StreamVGGT, and frame-level (block-)causal attention.

Window semantics (``window = N``, ``None`` = unbounded): frame ``t`` attends to itself and to at most ``N``
previous frames, i.e. to frames ``max(0, t-N) .. t``. This is exactly the published 4DLangVGGT extraction
(after each frame, if more than ``N = 128`` frames are cached, the oldest is dropped). The same rule is used
inside a chunk (windowed block-causal mask), so chunked processing equals frame-by-frame streaming.

Each attention layer keeps a :class:`KVRing`: a preallocated ring of frame slots holding *finished* keys
(after qk-norm and RoPE) and values, so nothing is re-normalised, re-rotated or re-concatenated per frame.
Every slot is tagged with its frame index; attention masks are built from those tags only when needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Largest boolean mask materialised by one attention call (elements); queries are split into groups above it.
MAX_MASK_ELEMENTS = 1 << 26


def allowed_frames(q_frames: torch.Tensor, k_frames: torch.Tensor, window: int | None) -> torch.Tensor:
    """(Cq, Ck) bool: query frame ``t`` may attend key frame ``u`` iff ``0 <= u <= t`` and ``u >= t - window``.

    Key frames tagged ``-1`` are empty slots.
    """
    q = q_frames[:, None]
    k = k_frames[None, :]
    ok = (k >= 0) & (k <= q)
    if window is not None:
        ok &= k >= q - window
    return ok


def frame_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_frames: Sequence[int] | torch.Tensor,
                           k_frames: Sequence[int] | torch.Tensor, tokens_per_frame: int,
                           window: int | None = None) -> torch.Tensor:
    """Scaled-dot-product attention where whole frames attend to whole frames (block-causal, optional window).

    Args:
        q: (B, H, Cq*P, D) queries of ``Cq`` frames of ``P = tokens_per_frame`` tokens each.
        k, v: (B, H, Ck*P, D) keys/values of ``Ck`` frames (slots).
        q_frames: (Cq,) frame index of each query frame; k_frames: (Ck,) frame index of each key slot (-1 = empty).
        window: max number of past frames a frame attends to (None = all).
    Returns:
        (B, H, Cq*P, D). No mask is built when every query may see every key; a key-only mask when all query
        frames share one pattern; otherwise query groups with a bounded boolean mask.
    """
    qf = torch.as_tensor(q_frames, dtype=torch.long).cpu()
    kf = torch.as_tensor(k_frames, dtype=torch.long).cpu()
    p = tokens_per_frame
    ok = allowed_frames(qf, kf, window)
    if bool(ok.all()):
        return F.scaled_dot_product_attention(q, k, v)
    if bool((ok == ok[:1]).all()):
        mask = ok[0].repeat_interleave(p).to(q.device).view(1, 1, 1, -1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    group = max(1, MAX_MASK_ELEMENTS // max(1, p * p * kf.numel()))
    outs = []
    for g0 in range(0, qf.numel(), group):
        rows = ok[g0:g0 + group]
        mask = rows.repeat_interleave(p, dim=0).repeat_interleave(p, dim=1).to(q.device)
        outs.append(F.scaled_dot_product_attention(q[:, :, g0 * p:(g0 + rows.shape[0]) * p], k, v,
                                                   attn_mask=mask[None, None]))
    return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]


class KVRing:
    """One attention layer's cache: a ring of frame slots, each ``P`` tokens of finished keys and values.

    Buffers are (B, H, capacity*P, D). Capacity grows (by doubling, bounded by ``window + chunk`` when a
    window is set) and is reused in steady state: with a window ``N`` and single-frame steps the ring holds
    ``N + 1`` slots, all valid, and attention runs without a mask and without copying the cache.
    """

    def __init__(self, entries_per_frame: int = 1) -> None:
        # cache entries one frame adds (the camera head's quirk adds one per refinement iteration)
        self.entries_per_frame = entries_per_frame
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.frames: list[int] = []  # frame index per slot, -1 = free
        self.tokens_per_frame: int | None = None
        self._next = 0

    @property
    def num_frames(self) -> int:
        """Number of slots currently holding an entry (frames, or entries for the camera cache)."""
        return sum(1 for f in self.frames if f >= 0)

    @property
    def nbytes(self) -> int:
        """Bytes allocated by the key and value buffers."""
        if self.k is None:
            return 0
        return self.k.numel() * self.k.element_size() * 2

    def evict_before(self, frame: int) -> None:
        """Free every slot holding a frame index < ``frame``."""
        self.frames = [f if f >= frame else -1 for f in self.frames]

    def _grow(self, needed: int, window: int | None, chunk: int, like: torch.Tensor) -> None:
        cap = len(self.frames)
        new_cap = max(needed, 2 * cap)
        if window is not None:
            new_cap = max(needed, min(new_cap, (window + chunk) * self.entries_per_frame))
        p = self.tokens_per_frame
        b, h, _, d = like.shape
        k_new = like.new_empty(b, h, new_cap * p, d)
        v_new = like.new_empty(b, h, new_cap * p, d)
        order = sorted((f, s) for s, f in enumerate(self.frames) if f >= 0)
        for i, (_, s) in enumerate(order):
            k_new[:, :, i * p:(i + 1) * p] = self.k[:, :, s * p:(s + 1) * p]
            v_new[:, :, i * p:(i + 1) * p] = self.v[:, :, s * p:(s + 1) * p]
        self.k, self.v = k_new, v_new
        self.frames = [f for f, _ in order] + [-1] * (new_cap - len(order))
        self._next = len(order)

    def append(self, k: torch.Tensor, v: torch.Tensor, frames: Sequence[int], window: int | None = None) -> None:
        """Store (B, H, C*P, D) keys/values of frames ``frames`` (C of them) in free slots."""
        c = len(frames)
        p = k.shape[2] // c
        if self.tokens_per_frame is None:
            self.tokens_per_frame = p
        elif p != self.tokens_per_frame:
            raise ValueError(f"cache holds frames of {self.tokens_per_frame} tokens, got frames of {p} tokens; "
                             "every frame of a stream must have the same size (start a new cache)")
        # keys are stored in the values' dtype (the qkv Linear's output dtype): under autocast this is exactly
        # what scaled_dot_product_attention would cast them to, so results are unchanged and memory halves.
        k = k.to(v.dtype) if k.dtype != v.dtype else k
        if self.k is not None and (self.k.shape[:2] != k.shape[:2] or self.k.shape[3] != k.shape[3]
                                   or self.k.dtype != k.dtype or self.k.device != k.device):
            raise ValueError(f"cache buffers are {tuple(self.k.shape)} {self.k.dtype} on {self.k.device} but new "
                             f"keys are {tuple(k.shape)} {k.dtype} on {k.device}; start a new cache")
        free = [s for s, f in enumerate(self.frames) if f < 0]
        if len(free) < c:
            self._grow(self.num_frames + c, window, c, k)
        cap = len(self.frames)
        slots = []
        s = self._next % cap
        while len(slots) < c:
            if self.frames[s] < 0:
                slots.append(s)
            s = (s + 1) % cap
        self._next = (slots[-1] + 1) % cap
        for i, (slot, f) in enumerate(zip(slots, frames, strict=True)):
            self.k[:, :, slot * p:(slot + 1) * p] = k[:, :, i * p:(i + 1) * p]
            self.v[:, :, slot * p:(slot + 1) * p] = v[:, :, i * p:(i + 1) * p]
            self.frames[slot] = int(f)

    def view(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Keys, values (B, H, S*P, D) over slots ``0 .. last used`` (views, no copy) and their frame tags."""
        used = [s for s, f in enumerate(self.frames) if f >= 0]
        hi = (max(used) + 1) if used else 0
        p = self.tokens_per_frame
        return self.k[:, :, :hi * p], self.v[:, :, :hi * p], self.frames[:hi]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: Sequence[int],
               window: int | None = None, evict_after: bool = True) -> torch.Tensor:
        """Append this chunk's keys/values, attend (windowed block-causal) and evict frames out of the window.

        q, k, v: (B, H, C*P, D) for the C frames ``frames`` (consecutive, increasing). Returns (B, H, C*P, D).
        """
        frames = list(frames)
        if window is not None:
            self.evict_before(frames[0] - window)
        self.append(k, v, frames, window)
        kk, vv, tags = self.view()
        if q.dtype != kk.dtype:
            q = q.to(kk.dtype)
        out = frame_causal_attention(q, kk, vv, frames, tags, self.tokens_per_frame, window)
        if window is not None and evict_after:
            self.evict_before(frames[-1] + 1 - window)
        return out


class StreamCache:
    """Per-layer :class:`KVRing` caches of one stream plus the number of frames seen so far.

    Used for the aggregator's global blocks (:class:`AggregatorCache`) and the camera head's trunk
    (:class:`CameraCache`). ``window``: max past frames each frame attends to (None = unbounded).
    """

    entries_per_frame = 1

    def __init__(self, num_layers: int, window: int | None = None) -> None:
        if window is not None and window < 0:
            raise ValueError(f"window must be >= 0 or None, got {window}")
        self.window = window
        self.layers = [KVRing(self.entries_per_frame) for _ in range(num_layers)]
        self.num_frames_seen = 0

    def __len__(self) -> int:
        """Number of frames currently cached (same in every layer)."""
        return self.layers[0].num_frames // self.entries_per_frame if self.layers else 0

    @property
    def nbytes(self) -> int:
        """Bytes held by all key/value buffers."""
        return sum(layer.nbytes for layer in self.layers)

    def reset(self) -> None:
        """Forget everything (start a new stream)."""
        self.layers = [KVRing(self.entries_per_frame) for _ in self.layers]
        self.num_frames_seen = 0


class AggregatorCache(StreamCache):
    """Cache of the aggregator's global blocks (one :class:`KVRing` per block)."""


class CameraCache(StreamCache):
    """Cache of the camera head's trunk blocks.

    Official quirk (reproduced): the current frame's key/value is appended on *every* refinement iteration,
    so a frame adds ``num_iterations`` entries per trunk block and later iterations also attend to its stale
    entries of earlier iterations. Entries are tagged with their frame, so a window evicts all of them at once.
    """

    def __init__(self, num_layers: int, window: int | None = None, num_iterations: int = 4) -> None:
        self.entries_per_frame = num_iterations
        super().__init__(num_layers, window)
