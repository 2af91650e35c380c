"""``train.py``: the command that trains a decoder (single process or torchrun/DDP).

The run is put together from modules with one job each: :mod:`training.config` (:class:`TrainConfig`, the flags,
their defaults and help, and what a resume may change), :mod:`training.setup` (run folder, data, resume, loader),
:mod:`training.decoder_setup` (the decoder, its fit to the data, its initial weights) and :mod:`training.loop` (the
epochs: steps, validation, metrics, checkpoints). This module parses the command line, runs them in order and
says how the run ended.

Determinism: the model is initialised from ``--seed``; every epoch reseeds torch/numpy/random with
``(seed, epoch, rank)`` and the batch sampler with ``(seed, epoch)``, so a run resumed from the
checkpoint of epoch N continues bit for bit like an uninterrupted run (model, optimizer, AMP scaler,
global step and learning-rate position are restored from the checkpoint). A run killed at any moment and
re-run with ``--resume`` leaves the same files, byte for byte, as an uninterrupted run: stale temporaries are
removed, ``metrics.jsonl`` is cut back to the checkpoint's epochs (:mod:`training.run_dir`), and ``state.json``
holds no wall-clock time and no invocation-only setting (:data:`training.config.INVOCATION`); the one wall-clock field,
``seconds``, is in ``metrics.jsonl`` only.

Refused with one ``error:`` line (:class:`utils.cli.UserError`, exit code 2): bad training data (the pre-flight of
:class:`training.dataset.SceneDataset`, NaN/inf tokens met in training), a resumed or ``--init`` decoder trained on
tokens of another backbone / layers / width or on targets of another dimension, fewer training frames than one
global batch, a fresh run into a folder that holds a run, a second writer in one run folder.

Decoders: ours (:class:`~model.decoder.SemanticBridgingDecoder`, the default) or the published head
(:class:`~model.published_decoder.PublishedLanguageHead`, ``--decoder published``); both are called through
their shared ``predict(tokens, frame, patch_start_idx)`` interface. The published head has no time-sensitive
decoder: with ``--decoder published`` video targets are not loaded and a warning says so.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch

from preprocess.token_cache import TokenCacheError
from training.config import TrainConfig, build_parser
from training.distributed import cleanup_distributed, init_distributed
from training.loop import train_epochs
from training.run_dir import RunDirLock
from training.setup import set_up
from utils.cli import UserError, interrupted, setup_logging_from
from utils.device import resolve_device

__all__ = ["TrainConfig", "build_parser", "main", "run"]

logger = logging.getLogger("train")


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train; returns a summary (final epoch, losses per epoch, checkpoint path)."""
    setup_logging_from(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist_info = init_distributed(resolve_device(cfg.device))
    out_dir = Path(cfg.out)
    lock = RunDirLock(out_dir)
    created = not out_dir.exists()
    try:
        training = set_up(cfg, out_dir, lock, dist_info)
        return train_epochs(cfg, training, out_dir, dist_info)
    except BaseException:
        if created and dist_info.is_main and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a run that failed before writing anything leaves no empty run folder behind
        raise
    finally:
        lock.release()
        cleanup_distributed()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``train.py``: parse ``argv`` into a :class:`TrainConfig` and train. Expected failures raise
    :class:`UserError` (a token file that turns out to be bad while training included); ``train.py`` prints them
    as one ``error:`` line (exit code 2)."""
    cfg = TrainConfig.from_argv(argv)
    try:
        summary = run(cfg)
    except TokenCacheError as e:  # "<file>: <what>; <fix>" from preprocess.token_cache, read during training
        raise UserError(str(e)) from None
    except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM: one line (utils.cli.cli_main), exit code 130 / 143
        raise interrupted(e, "the checkpoints saved so far are kept", cfg.out,
                          "add --resume to the same command to continue from the last one") from None
    if summary["rank"] == 0:
        fin = summary["final"]
        msg = ", ".join(f"{k}={v:.5g}" if isinstance(v, float) and math.isfinite(v) else f"{k}={v}"
                        for k, v in fin.items())
        print(f"done: epoch {summary['epoch']}, step {summary['global_step']}; {msg}; checkpoint {summary['checkpoint']}")
    return summary
