"""Learning-rate schedule (linear warmup, then constant or cosine) and AdamW parameter groups."""

from __future__ import annotations

import math

import torch
from torch import nn


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, schedule: str = "constant",
          min_lr: float = 1e-6) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Warmup: ``base_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (so the first step
    already learns, unlike the published per-epoch warmup whose epoch 0 has lr 0). After warmup:
    ``constant`` keeps ``base_lr``; ``cosine`` decays from ``base_lr`` to ``min_lr`` at ``total_steps``.
    """
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown schedule {schedule!r}; choose constant or cosine")
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set ``lr`` on every parameter group."""
    for g in optimizer.param_groups:
        g["lr"] = lr


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weights with decay; biases and norm parameters (every 1-D parameter) without."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
