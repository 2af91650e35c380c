"""Everything a training run does before its first step: the run folder (lock, what a killed run left, fresh run or
resume), the training data and its split, the decoder, optimizer, AMP scaler and the state a resume restores, the
global-batch sampler and data loader. :func:`set_up` returns them as one :class:`Training`.

Refused with one ``error:`` line (:class:`utils.cli.UserError`, exit code 2): bad training data (the pre-flight of
:class:`training.dataset.SceneDataset`), fewer training frames than one global batch, a fresh run into a folder
that holds a run, a resume with nothing to resume, a second writer in one run folder.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from model.decoder import DecoderConfig
from model.decoder_io import LAST, load_state_strict
from model.published_decoder import KIND as PUBLISHED
from model.published_decoder import PublishedDecoderConfig
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.dataset import SceneDataset, collate_samples
from training.decoder_setup import build_model, checked_decoder_config, wrap_for_training
from training.distributed import DistInfo, one_outcome
from training.loss import LossWeights
from training.run_dir import (
    RunDirLock,
    clean_stale,
    deterministic,
    existing_run,
    restart_metrics,
    resume_point,
)
from training.sampler import GlobalBatchSampler
from training.schedule import param_groups
from utils.cli import UserError
from utils.host_memory import keep_freed_memory

logger = logging.getLogger("train")


@dataclass
class Training:
    """What the epoch loop (:mod:`training.loop`) works with: the data, the decoder and its optimisation state."""

    ds: SceneDataset
    train_idx: list[int]
    val_idx: list[int]
    decoder_config: DecoderConfig | PublishedDecoderConfig
    model: torch.nn.Module
    ddp_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    weights: LossWeights
    amp_dtype: torch.dtype | None
    sampler: GlobalBatchSampler
    loader: DataLoader
    start_epoch: int
    global_step: int
    history: list[dict[str, Any]]
    warmup_steps: int
    total_steps: int


def num_workers(cfg: TrainConfig) -> int:
    """``--num-workers``, with ``auto`` (None) resolved to 0: the training process loads the batches itself. Worker
    processes hand every batch over through shared memory, and receiving and reading it there costs the training
    process more than loading it from the cache itself (measured on the CPU, batch 8 of 782x2048 tokens, with
    memory-mapped reads: 4.3-4.6 ms per sample of the training thread's CPU time with 1 or 2 workers, 3.4-3.6 ms
    with none, and 3.4x the wall time), so workers cannot make the step wait less."""
    return 0 if cfg.num_workers is None else int(cfg.num_workers)


def precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--precision`` on ``device`` (None: no autocast, always on the CPU)."""
    if device.type != "cuda":
        return None
    name = {"auto": "fp16", "fp32": None, "fp16": "fp16", "bf16": "bf16"}[cfg.precision]
    return {"fp16": torch.float16, "bf16": torch.bfloat16, None: None}[name]


def prepare_run_dir(out_dir: Path, lock: RunDirLock, dist_info: DistInfo) -> None:
    """Rank 0: lock the run folder and remove what a killed run left there (before any rank reads it)."""
    with one_outcome(dist_info):  # a folder locked by another run stops every rank, with one error line
        if dist_info.is_main and out_dir.is_dir():
            lock.acquire()
            removed = clean_stale(out_dir)
            if removed:
                logger.info("%s: removed what an interrupted run left: %s", out_dir, ", ".join(removed))


def _resume_point(cfg: TrainConfig, out_dir: Path, dist_info: DistInfo) -> tuple[Any, bool]:
    """(the checkpoint to resume or None, whether the run trains the published head), after refusing a resume
    with nothing to resume and a fresh run into a folder that already holds one."""
    resume_state = None
    if cfg.resume:
        src = resume_point(out_dir) if cfg.resume == "last" else Path(cfg.resume)
        if src is None:
            raise UserError("nothing to resume: the run folder holds no checkpoint yet", out_dir,
                            "run the same command without --resume to start from epoch 0 (or pass --resume "
                            "<checkpoint folder>)")
        named = (out_dir / LAST).read_text().strip() if (out_dir / LAST).is_file() else None
        if cfg.resume == "last" and src.name != named and dist_info.is_main:
            logger.info("%s: continuing from %s, the newest checkpoint of this run (the run was stopped before "
                        "'%s' named it)", out_dir, src.name, LAST)
        resume_state = load_checkpoint(src)
        src_run = Path(resume_state[2]["path"]).resolve().parent
        if src_run != out_dir.resolve() and (what := existing_run(out_dir)):
            raise UserError(f"--resume continues {resume_state[2]['path']} into a run folder that holds another "
                            f"run ({what})", out_dir, "pass an empty or new --out")
        for key in ("decoder_config", "epoch", "global_step"):
            if key not in resume_state[2]:
                raise UserError(f"the checkpoint's state.json has no {key!r}", Path(resume_state[2]["path"]) /
                                "state.json", "it was not written by train.py: pass another checkpoint")
        published = resume_state[2]["decoder_config"].get("kind") == PUBLISHED
    else:
        published = cfg.published
        if what := existing_run(out_dir):
            raise UserError(f"the run folder already holds a training run ({what})", out_dir,
                            "add --resume to continue it, or pass another --out (or delete the folder to "
                            "start over)")
    if cfg.save_published_pth and not published:
        raise UserError("--save-published-pth writes the published head's checkpoint layout, but this run "
                        "trains our decoder, which the published inference code cannot load", None,
                        "add --decoder published, or drop --save-published-pth (the checkpoint folders "
                        "hold our decoder)")
    return resume_state, published


def _restore(resume_state: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler, dist_info: DistInfo) -> tuple[int, int, list[dict]]:
    """Load a checkpoint's model, optimizer and scaler states; -> (start epoch, global step, history)."""
    if resume_state is None:
        return 0, 0, []
    model_sd, optim_sd, info = resume_state
    try:
        load_state_strict(model, model_sd, info["path"])
        if optim_sd is not None:
            optimizer.load_state_dict(optim_sd)
    except ValueError as e:  # an optimizer state of another model
        raise UserError(f"the checkpoint's optimizer state does not fit its decoder ({e})",
                        Path(info["path"]) / "optim.safetensors",
                        "the checkpoint is damaged: resume from another epoch's folder") from None
    if info.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(info["scaler"])
    start_epoch, global_step = int(info["epoch"]), int(info["global_step"])
    if dist_info.is_main:
        logger.info("resumed from %s (epoch %d, step %d)", info["path"], start_epoch, global_step)
    return start_epoch, global_step, [deterministic(h) for h in info.get("history", [])]


def _worker_init(_worker_id: int) -> None:
    keep_freed_memory()  # inherited by forked workers; spawned ones set it here


def _loader(cfg: TrainConfig, ds: SceneDataset, train_idx: list[int], val_idx: list[int], dist_info: DistInfo,
            scenes_text: str) -> tuple[GlobalBatchSampler, DataLoader]:
    """The global-batch sampler and the data loader; too few frames for one batch is a clear error."""
    device = dist_info.device
    sampler = GlobalBatchSampler(ds.groups(train_idx), cfg.batch_size, dist_info.world_size, dist_info.rank,
                                 seed=cfg.seed, shuffle=True, drop_last=True)
    if len(sampler) == 0:
        sizes = [len(g) for g in ds.groups(train_idx)]
        per = f" (at most {max(sizes)} of one frame size)" if len(sizes) > 1 else ""
        fit = max(1, max(sizes) // dist_info.world_size)
        raise UserError(f"{len(train_idx)} training frame(s){per} are fewer than one global batch "
                        f"({cfg.batch_size} x {dist_info.world_size} process(es))", scenes_text,
                        f"pass --batch-size {fit} or lower, or add frames"
                        + ("" if cfg.train_on_eval_frames or not val_idx else
                           " (or --train-on-eval-frames)"))
    workers = num_workers(cfg)
    # on the CPU the tokens are converted to float32 while they are stacked (one pass instead of two); on a
    # GPU they travel in their storage dtype and are converted there
    collate = functools.partial(collate_samples, token_dtype=torch.float32 if device.type == "cpu" else None)
    keep_freed_memory()  # batches reuse the pages of the previous ones (utils.host_memory)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                        worker_init_fn=_worker_init)
    return sampler, loader


def set_up(cfg: TrainConfig, out_dir: Path, lock: RunDirLock, dist_info: DistInfo) -> Training:
    """Check the run folder, load the data, build (or restore) the decoder and its optimizer, make the loader;
    rank 0 then holds the run folder's lock and has cut ``metrics.jsonl`` back to the epochs the run starts from."""
    device = dist_info.device
    prepare_run_dir(out_dir, lock, dist_info)
    with one_outcome(dist_info):  # the checks fail on every rank alike: one error line for all
        resume_state, published = _resume_point(cfg, out_dir, dist_info)
        ds = SceneDataset(cfg.scenes, tokens_subdir=cfg.tokens_subdir, features_subdir=cfg.features_subdir,
                          video_subdir=None if cfg.no_video or published else cfg.video_features_subdir,
                          train_on_eval_frames=cfg.train_on_eval_frames, cache_in_memory=cfg.cache_in_memory,
                          read_tokens_in_collate=True)
        if published and not cfg.no_video and dist_info.is_main and \
                any((s.root / cfg.video_features_subdir).is_dir() for s in ds.scenes):
            logger.warning("the published head has no time-sensitive decoder: the video targets (%s/) are not "
                           "trained (use our decoder, --decoder default, to train them)",
                           cfg.video_features_subdir)
        train_idx, val_idx = ds.split_indices()
        scenes_text = ", ".join(str(s.root) for s in ds.scenes)
        if not train_idx:
            raise UserError("no training frames left after holding out the evaluation frames", scenes_text,
                            "add scenes or pass --train-on-eval-frames")
        video_dim = ds.video_dim if ds.video_dim and cfg.w_video > 0 else 0
        dcfg = checked_decoder_config(cfg, ds, video_dim, resume_state)
        model = build_model(cfg, dcfg, ds, video_dim, resume_state, published, dist_info)
        optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
        amp_dtype = precision(cfg, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        start_epoch, global_step, history = _restore(resume_state, model, optimizer, scaler, dist_info)
    ddp_model = wrap_for_training(model, dist_info)
    with one_outcome(dist_info):  # rank 0 alone locks the run folder and writes to it
        sampler, loader = _loader(cfg, ds, train_idx, val_idx, dist_info, scenes_text)
        if dist_info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            restart_metrics(out_dir, history[:start_epoch])
    steps_per_epoch = len(sampler)
    weights = LossWeights(l1=cfg.w_l1, cos=cfg.w_cos, img=cfg.w_img, rgb=cfg.w_rgb, video=cfg.w_video)
    return Training(ds, train_idx, val_idx, dcfg, model, ddp_model, optimizer, scaler, weights, amp_dtype,
                    sampler, loader, start_epoch, global_step, history,
                    warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)),
                    total_steps=steps_per_epoch * cfg.epochs)
