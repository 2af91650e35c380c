"""BatchNorm under data parallelism (the published head normalises with BatchNorm everywhere).

Default (as published): plain ``BatchNorm2d`` in every process. In training mode each process normalises with
the statistics of its own per-process batch, and its running statistics are updated from that batch only.
DDP's ``broadcast_buffers`` (on, as in the published code) then copies rank 0's buffers to every other rank at
the start of each forward, so the running statistics a checkpoint holds (rank 0 writes it) are an average over
rank 0's batches only. Hence N processes x batch b is *not* the same trajectory as one process x batch N*b for
this head (it is for ours, which uses GroupNorm).

``--sync-bn``: :func:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`, so batch statistics are those of the global
batch. torch's SyncBatchNorm refuses CPU tensors in a distributed forward ("expected input tensor to be on GPU"),
so the option is refused on CPU / gloo with a clear error instead of failing mid-step; in a single process and
for decoders without BatchNorm it has nothing to do and is ignored with a log line. The converted modules keep
the parameter and buffer names, so checkpoints load into the plain head unchanged.
"""

from __future__ import annotations

import logging

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from training.distributed import DistInfo
from utils.cli import UserError

logger = logging.getLogger("train")


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def prepare_batchnorm(model: nn.Module, sync_bn: bool, dist_info: DistInfo) -> nn.Module:
    """The model to train: unchanged (per-process BatchNorm), or with SyncBatchNorm when ``sync_bn`` applies."""
    if not sync_bn:
        return model
    if not has_batchnorm(model):
        if dist_info.is_main:
            logger.info("--sync-bn: this decoder has no BatchNorm; nothing to convert")
        return model
    if not dist_info.enabled:
        if dist_info.is_main:
            logger.info("--sync-bn: a single process has nothing to synchronise; plain BatchNorm is used")
        return model
    if dist_info.device.type != "cuda":
        raise UserError(
            "--sync-bn needs CUDA: torch's SyncBatchNorm refuses CPU tensors in a distributed (gloo) forward", None,
            "drop --sync-bn (per-process BatchNorm statistics, as published) or train on GPUs with torchrun")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
