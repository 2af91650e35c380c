"""torchrun / DDP plumbing: process-group setup (gloo on CPU, nccl on GPU) and small collectives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.cli import UserExit


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (else a single-process DistInfo).

    Uses nccl when ``device`` is CUDA (one GPU per local rank), gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (identity in a single process)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


@contextmanager
def one_outcome(info: DistInfo) -> Iterator[None]:
    """Run a block in which only some ranks may fail (rank 0 locking the run folder, writing a checkpoint, ...),
    then let every rank learn whether any failed, so none is left waiting at the next collective for a rank that
    has stopped. On failure the lowest failing rank re-raises its exception (printed once, as one ``error:`` line
    for an expected failure) and every other rank leaves quietly with the same exit code 2 (:class:`UserExit`,
    nothing printed). The block must not run collectives itself; the check is one all-reduce, i.e. a barrier.
    In a single process the block runs as it is."""
    error: BaseException | None = None
    try:
        yield
    except Exception as e:  # noqa: BLE001 - reported to the group, then re-raised below
        if not info.enabled:
            raise
        error = e
    if not info.enabled:
        return
    failed = torch.zeros(info.world_size, dtype=torch.int32, device=info.device)
    failed[info.rank] = int(error is not None)
    dist.all_reduce(failed, op=dist.ReduceOp.SUM)
    ranks = failed.nonzero().flatten().tolist()
    if not ranks:
        return
    if error is not None and info.rank == ranks[0]:
        raise error
    raise UserExit(f"rank {ranks[0]} failed")  # that rank printed the error
