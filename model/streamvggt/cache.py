"""Key/value caches for streaming StreamVGGT, and frame-level (block-)causal attention.

Window semantics (``window = N``, ``None`` = unbounded): frame ``t`` attends to itself and to at most ``N``
previous frames, i.e. to frames ``max(0, t-N) .. t``. This is exactly the published 4DLangVGGT extraction
(after each frame, if more than ``N = 128`` frames are cached, the oldest is dropped). The same rule is used
inside a chunk (windowed block-causal mask), so chunked processing equals frame-by-frame streaming.

Each attention layer keeps a :class:`KVRing`: a preallocated ring of frame slots holding *finished* keys
(after qk-norm and RoPE) and values, so nothing is re-normalised, re-rotated or re-concatenated per frame.
Every slot is tagged with its frame index. Single frames go to any free slot (all cached frames are visible,
so no mask and no order is needed). A chunk of several frames is stored right after the cached frames, in
frame order (the cached frames are first moved to the front when the chunk does not fit behind them), so each
query frame's allowed keys are one contiguous slot range: attention runs per query frame over that slice of
the cache, without a mask and without computing masked-out scores. Masks are only built for layouts where the
allowed keys are not contiguous, or for frames of very few tokens (the camera head's single token), where one
masked call is cheaper than many small ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Largest boolean mask materialised by one attention call (elements); queries are split into groups above it.
MAX_MASK_ELEMENTS = 1 << 26
# Frames of at least this many tokens attend per query frame over contiguous key slices instead of one masked
# call (below it, the per-call overhead outweighs the masked-out work).
SLICE_MIN_TOKENS = 8


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


def contiguous_ranges(ok: torch.Tensor) -> list[tuple[int, int]] | None:
    """Per row of a (Cq, Ck) bool matrix, the key range ``[lo, hi)`` when its True entries are one non-empty
    contiguous run, else None (for the whole matrix)."""
    ck = ok.shape[1]
    idx = torch.arange(ck)
    lo = torch.where(ok, idx, ck).amin(1)
    hi = torch.where(ok, idx, -1).amax(1) + 1
    if not bool(((hi - lo) == ok.sum(1)).all()) or not bool((hi > lo).all()):
        return None
    return list(zip(lo.tolist(), hi.tolist(), strict=True))


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
        (B, H, Cq*P, D). No mask is built when every query may see every key. When each query frame's allowed
        key slots are one contiguous run (frames stored in order, as batched passes and chunked caches do) and
        frames have at least ``SLICE_MIN_TOKENS`` tokens, each query frame (or run of query frames with the same
        keys) attends to its slice of the keys: no mask and no masked-out work. Otherwise a key-only mask when
        all query frames share one pattern, else query groups with a bounded boolean mask.
    """
    qf = torch.as_tensor(q_frames, dtype=torch.long).cpu()
    kf = torch.as_tensor(k_frames, dtype=torch.long).cpu()
    p = tokens_per_frame
    ok = allowed_frames(qf, kf, window)
    if bool(ok.all()):
        return F.scaled_dot_product_attention(q, k, v)
    ranges = contiguous_ranges(ok) if p >= SLICE_MIN_TOKENS else None
    if ranges is not None:
        out = None
        g0 = 0
        while g0 < len(ranges):  # runs of query frames with the same key range share one call
            g1 = g0 + 1
            while g1 < len(ranges) and ranges[g1] == ranges[g0]:
                g1 += 1
            lo, hi = ranges[g0]
            part = F.scaled_dot_product_attention(q[:, :, g0 * p:g1 * p], k[:, :, lo * p:hi * p],
                                                  v[:, :, lo * p:hi * p])
            if g0 == 0 and g1 == len(ranges):
                return part
            if out is None:  # (B, H, Cq*P, D) laid out as (B, Cq*P, H, D): the heads merge without a copy
                b, h, _, d = part.shape
                out = part.new_empty(b, q.shape[2], h, d).transpose(1, 2)
            out[:, :, g0 * p:g1 * p] = part
            g0 = g1
        assert out is not None  # ranges is not empty
        return out
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
    ``N + 1`` slots, all valid, and attention runs without a mask and without copying the cache. A chunk of
    ``C > 1`` frames is stored in frame order right behind the cached frames (see :meth:`append_in_order`), so
    that each of its frames attends to one contiguous slice (at most ``N`` frames are moved per chunk).
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

    def _buffers(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The key and value buffers and the tokens per frame (set once the first frames are stored)."""
        assert self.k is not None and self.v is not None and self.tokens_per_frame is not None
        return self.k, self.v, self.tokens_per_frame

    def evict_before(self, frame: int) -> None:
        """Free every slot holding a frame index < ``frame``."""
        self.frames = [f if f >= frame else -1 for f in self.frames]

    def _grow(self, needed: int, window: int | None, chunk: int, like: torch.Tensor) -> None:
        cap = len(self.frames)
        new_cap = max(needed, 2 * cap)
        if window is not None:
            new_cap = max(needed, min(new_cap, (window + chunk) * self.entries_per_frame))
        p = self.tokens_per_frame
        assert p is not None  # set by _prepare
        b, h, _, d = like.shape
        k_new = like.new_empty(b, h, new_cap * p, d)
        v_new = like.new_empty(b, h, new_cap * p, d)
        order = sorted((f, s) for s, f in enumerate(self.frames) if f >= 0)
        if order:  # frames are cached, so the buffers exist
            k_old, v_old, _ = self._buffers()
            for i, (_, s) in enumerate(order):
                k_new[:, :, i * p:(i + 1) * p] = k_old[:, :, s * p:(s + 1) * p]
                v_new[:, :, i * p:(i + 1) * p] = v_old[:, :, s * p:(s + 1) * p]
        self.k, self.v = k_new, v_new
        self.frames = [f for f, _ in order] + [-1] * (new_cap - len(order))
        self._next = len(order)

    def _prepare(self, k: torch.Tensor, v: torch.Tensor, c: int) -> torch.Tensor:
        """Check that ``c`` frames of keys/values fit this cache; return the keys in the values' dtype."""
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
        return k

    def append(self, k: torch.Tensor, v: torch.Tensor, frames: Sequence[int], window: int | None = None) -> None:
        """Store (B, H, C*P, D) keys/values of frames ``frames`` (C of them) in free slots (any order)."""
        c = len(frames)
        k = self._prepare(k, v, c)
        free = [s for s, f in enumerate(self.frames) if f < 0]
        if len(free) < c:
            self._grow(self.num_frames + c, window, c, k)
        kb, vb, p = self._buffers()
        cap = len(self.frames)
        slots: list[int] = []
        s = self._next % cap
        while len(slots) < c:
            if self.frames[s] < 0:
                slots.append(s)
            s = (s + 1) % cap
        self._next = (slots[-1] + 1) % cap
        for i, (slot, f) in enumerate(zip(slots, frames, strict=True)):
            kb[:, :, slot * p:(slot + 1) * p] = k[:, :, i * p:(i + 1) * p]
            vb[:, :, slot * p:(slot + 1) * p] = v[:, :, i * p:(i + 1) * p]
            self.frames[slot] = int(f)

    def append_in_order(self, k: torch.Tensor, v: torch.Tensor, frames: Sequence[int],
                        window: int | None = None) -> None:
        """Like :meth:`append`, but afterwards the cached frames and then ``frames`` sit in consecutive slots in
        increasing frame order (``frames`` must be increasing and follow every cached frame). When the chunk
        does not fit behind the cached frames, those are first moved to slots ``0 ..`` (one copy of at most
        ``window`` frames); the chunk itself is written with one slice copy."""
        c = len(frames)
        k = self._prepare(k, v, c)
        live = sorted((f, s) for s, f in enumerate(self.frames) if f >= 0)
        if live and live[-1][0] >= int(frames[0]):
            raise ValueError(f"frames {list(frames)} do not follow the cached frames (last {live[-1][0]})")
        if self.k is None or len(self.frames) < len(live) + c:
            self._grow(len(live) + c, window, c, k)  # also moves the cached frames to slots 0.. in order
            live = sorted((f, s) for s, f in enumerate(self.frames) if f >= 0)
        kb, vb, p = self._buffers()
        n, cap = len(live), len(self.frames)
        s0 = live[0][1] if live else 0
        in_order = all(s == s0 + i for i, (_, s) in enumerate(live))
        if not in_order or s0 + n + c > cap:  # move the cached frames to the front, in frame order
            if in_order:
                src_k, src_v = kb[:, :, s0 * p:(s0 + n) * p], vb[:, :, s0 * p:(s0 + n) * p]
                if s0 < n:  # overlapping source and destination
                    src_k, src_v = src_k.clone(), src_v.clone()
            else:
                idx = torch.cat([torch.arange(s * p, (s + 1) * p) for _, s in live]).to(kb.device)
                src_k, src_v = kb.index_select(2, idx), vb.index_select(2, idx)
            kb[:, :, :n * p] = src_k
            vb[:, :, :n * p] = src_v
            s0 = 0
        a = s0 + n
        kb[:, :, a * p:(a + c) * p] = k
        vb[:, :, a * p:(a + c) * p] = v
        self.frames = [-1] * cap
        for i, (f, _) in enumerate(live):
            self.frames[s0 + i] = f
        for i, f in enumerate(frames):
            self.frames[a + i] = int(f)
        self._next = (a + c) % cap

    def view(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Keys, values (B, H, S*P, D) over slots ``0 .. last used`` (views, no copy) and their frame tags."""
        used = [s for s, f in enumerate(self.frames) if f >= 0]
        hi = (max(used) + 1) if used else 0
        kb, vb, p = self._buffers()
        return kb[:, :, :hi * p], vb[:, :, :hi * p], self.frames[:hi]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, frames: Sequence[int],
               window: int | None = None, evict_after: bool = True) -> torch.Tensor:
        """Append this chunk's keys/values, attend (windowed block-causal) and evict frames out of the window.

        q, k, v: (B, H, C*P, D) for the C frames ``frames`` (consecutive, increasing). Returns (B, H, C*P, D).
        """
        frames = list(frames)
        if window is not None:
            self.evict_before(frames[0] - window)
        if len(frames) == 1 and (window is None or len(self.frames) <= (window + 1) * self.entries_per_frame):
            # one frame sees every cached frame, and the ring has no free slot to mask: any slot will do
            self.append(k, v, frames, window)
        else:  # a chunk (or a frame after chunks, in a larger ring): frames in order, one key slice per frame
            self.append_in_order(k, v, frames, window)
        kk, vv, tags = self.view()
        if q.dtype != kk.dtype:
            q = q.to(kk.dtype)
        out = frame_causal_attention(q, kk, vv, frames, tags, self._buffers()[2], window)
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
