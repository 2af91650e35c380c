"""Deterministic batch sampling that gives identical global batches for any number of ranks.

Frames are grouped by their network input size (frames of different sizes cannot share a batch).
For epoch ``e`` a generator seeded with ``(seed, e)`` permutes each group; each group is cut into
*global* batches of ``batch_size * world_size`` samples; the order of all global batches is shuffled
with the same generator; rank ``r`` takes slice ``[r*b, (r+1)*b)`` of every global batch. So one
process with batch ``2b`` sees exactly the samples that two ranks with batch ``b`` see together.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class GlobalBatchSampler(Sampler[list[int]]):
    """Batch sampler over ``groups`` (lists of dataset indices that may be batched together)."""

    def __init__(self, groups: Sequence[Sequence[int]], batch_size: int, world_size: int = 1, rank: int = 0,
                 seed: int = 0, shuffle: bool = True, drop_last: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size > 1 and not drop_last:
            raise ValueError("drop_last=False is only supported in a single process (ranks need equal batches)")
        self.groups = [list(g) for g in groups if len(g)]
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        gb = self.batch_size * self.world_size
        batches: list[list[int]] = []
        for group in self.groups:
            order = torch.randperm(len(group), generator=g).tolist() if self.shuffle else range(len(group))
            idx = [group[i] for i in order]
            for s in range(0, len(idx), gb):
                chunk = idx[s:s + gb]
                if len(chunk) < gb and self.drop_last:
                    continue
                batches.append(chunk)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        b = self.batch_size
        for chunk in self.global_batches():
            if self.world_size == 1:
                yield chunk
            else:
                yield chunk[self.rank * b:(self.rank + 1) * b]

    def __len__(self) -> int:
        gb = self.batch_size * self.world_size
        if self.drop_last:
            return sum(len(g) // gb for g in self.groups)
        return sum(-(-len(g) // gb) for g in self.groups)
