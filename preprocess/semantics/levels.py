"""Level maps -> 4D LangSplat ``_s.npy`` / ``_f.npy``.

A *level map* is an int64 (H, W) array of region ids, -1 where no region. ``_s.npy`` stacks four levels
(default | small | middle | large) as float32 (4, H, W) whose level-l indices are shifted by the number of
rows of the earlier levels, so one index space covers the rows of ``_f.npy`` (N, D), in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pool_levels(small: np.ndarray, middle: np.ndarray, large: np.ndarray) -> np.ndarray:
    """The pooled ``default`` level: per pixel the finest region present (small over middle over large).

    This mirrors SAM's pooled output in 4D LangSplat, where overlaps are resolved in favour of smaller masks.
    Ids must be unique across the three inputs (offset them first if they are per-level).
    """
    out = large.copy()
    out[middle >= 0] = middle[middle >= 0]
    out[small >= 0] = small[small >= 0]
    return out


def compact(level_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel ids to 0..n-1 in increasing id order -> (int64 (H, W) map with -1 kept, the n original ids)."""
    ids = np.unique(level_map)
    ids = ids[ids >= 0]
    local = np.full(level_map.shape, -1, dtype=np.int64)
    valid = level_map >= 0
    local[valid] = np.searchsorted(ids, level_map[valid])
    return local, ids


def assemble(level_maps: Sequence[np.ndarray], level_feats: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack compact per-level maps and their rows into ``(_s (L, H, W) float32, _f (N, D) float32)``.

    ``level_maps[l]`` holds 0..n_l-1 (every index used) or -1; ``level_feats[l]`` is (n_l, D). A level with no
    region is allowed (n_l = 0; its plane is all -1), unlike the published script which stops there.
    """
    if len(level_maps) != len(level_feats):
        raise ValueError("one feature block per level map is required")
    planes, offset = [], 0
    dim = next((f.shape[1] for f in level_feats if f.ndim == 2), 0)
    for lvl, (m, f) in enumerate(zip(level_maps, level_feats, strict=True)):
        n = f.shape[0]
        present = np.unique(m[m >= 0])
        if not np.array_equal(present, np.arange(n)):
            raise ValueError(f"level {lvl}: map indices {present[:8]}... do not cover 0..{n - 1} exactly")
        p = m.astype(np.float32)
        p[m >= 0] += offset
        planes.append(p)
        offset += n
    s = np.stack(planes).astype(np.float32)
    f = (np.concatenate([np.asarray(x, dtype=np.float32).reshape(-1, dim) for x in level_feats])
         if offset else np.zeros((0, dim), np.float32))
    return s, f


def split_levels(s: np.ndarray) -> list[np.ndarray]:
    """Inverse of the offsets: an ``_s.npy`` array (L, H, W) -> L compact int64 level maps."""
    return [compact(np.rint(plane).astype(np.int64))[0] for plane in s]
