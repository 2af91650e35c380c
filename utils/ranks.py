"""Splitting a list of independent jobs (scenes, videos) across ``torchrun`` processes.

``torchrun --nproc_per_node=N -m preprocess.extract_tokens <dataset root>`` starts N copies of a command; each
takes every N-th job of the same sorted list (rank r takes jobs r, r+N, ...): no overlap, no coordination beyond the
``RANK`` / ``WORLD_SIZE`` that torchrun sets, and each job's outputs depend only on that job, so N processes write
exactly the bytes one process writes. Each rank resumes its own jobs when re-run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent")
    return rank, world


def my_share(jobs: Sequence[T]) -> list[T]:
    """This process's jobs: every ``world``-th one starting at ``rank`` (all of them outside torchrun)."""
    rank, world = rank_and_world()
    return list(jobs)[rank::world]


def local_device_index() -> int:
    """``LOCAL_RANK`` (the GPU this process should use on its node), 0 outside torchrun."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0)
