"""The training loop behind ``train.py`` (single process or torchrun/DDP).

Determinism: the model is initialised from ``--seed``; every epoch reseeds torch/numpy/random with
``(seed, epoch, rank)`` and the batch sampler with ``(seed, epoch)``, so a run resumed from the
checkpoint of epoch N continues bit for bit like an uninterrupted run (model, optimizer, AMP scaler,
global step and learning-rate position are restored from the checkpoint). A run killed at any moment and
re-run with ``--resume`` leaves the same files, byte for byte, as an uninterrupted run: stale temporaries are
removed, ``metrics.jsonl`` is cut back to the checkpoint's epochs (:mod:`training.run_dir`), and ``state.json``
holds no wall-clock time and no invocation-only argument (:data:`INVOCATION_ARGS`); the one wall-clock field,
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

import argparse
import functools
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.decoder import DecoderConfig, init_feature_extractor_from_backbone
from model.decoder_io import (
    LAST,
    DecoderLoadError,
    build_decoder,
    decoder_config_from_dict,
    decoder_kind,
    load_state_strict,
    read_decoder,
)
from model.published_decoder import KIND as PUBLISHED
from model.published_decoder import PublishedDecoderConfig
from preprocess.token_cache import TokenCacheError
from training.batchnorm import prepare_batchnorm
from training.checkpoint import load_checkpoint, save_checkpoint, save_published_pth
from training.dataset import SceneDataset, check_finite_batch, collate_samples, token_info_mismatches
from training.distributed import DistInfo, all_reduce_sum, cleanup_distributed, init_distributed, one_outcome
from training.loss import LOSS_KINDS, LossWeights, compute_loss
from training.run_dir import (
    RunDirLock,
    append_metrics,
    clean_stale,
    deterministic,
    existing_run,
    restart_metrics,
    resume_point,
)
from training.sampler import GlobalBatchSampler
from training.schedule import lr_at, param_groups, set_lr
from training.targets import batch_to_device, expand_targets
from utils.cli import UserError, add_device_arg, add_logging_args, interrupted, setup_logging_from
from utils.device import resolve_device
from utils.host_memory import keep_freed_memory

logger = logging.getLogger("train")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _workers(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'auto' nor an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def num_workers(args: argparse.Namespace) -> int:
    """``--num-workers``, with ``auto`` (None) resolved to 0: the training process loads the batches itself. Worker
    processes hand every batch over through shared memory, and receiving and reading it there costs the training
    process more than loading it from the cache itself (measured on the CPU, batch 8 of 782x2048 tokens, with
    memory-mapped reads: 4.3-4.6 ms per sample of the training thread's CPU time with 1 or 2 workers, 3.4-3.6 ms
    with none, and 3.4x the wall time), so workers cannot make the step wait less."""
    return 0 if args.num_workers is None else int(args.num_workers)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train the Semantic Bridging Decoder (or, with --decoder published, the published 4DLangVGGT "
        "head) on cached StreamVGGT tokens and semantic targets. "
        "Single process: `python train.py --scenes data/hypernerf/americano --out runs/x`; "
        "multi-GPU/CPU: `torchrun --nproc_per_node=4 train.py ...` (--batch-size is per process).")
    d = p.add_argument_group("data")
    d.add_argument("--scenes", nargs="+", required=True,
                   help="scene folders (each with rgb/2x/, tokens/ and the feature folder), or dataset roots "
                   "whose sub-folders are such scenes")
    d.add_argument("--tokens-subdir", default="tokens", help="token cache folder inside each scene")
    d.add_argument("--features-subdir", default="clip_features-language_features_dim3",
                   help="folder of <key>_f.npy / <key>_s.npy language targets inside each scene")
    d.add_argument("--video-features-subdir", default="video_features-language_features_dim6",
                   help="folder of time-sensitive targets (<key>_f.npy, <key>_s.npy); the video head is trained "
                   "only when every scene has it")
    d.add_argument("--no-video", action="store_true", help="never train the time-sensitive head")
    d.add_argument("--train-on-eval-frames", action="store_true",
                   help="also train on the annotated evaluation frames (the published behaviour); by default "
                   "they are held out and used for the validation loss")
    d.add_argument("--cache-in-memory", action="store_true",
                   help="keep loaded samples in memory after their first use (small datasets / tests)")
    d.add_argument("--num-workers", type=_workers, default="auto",
                   help="DataLoader worker processes per rank (kept for the whole run). auto (default) = 0: the "
                   "training process reads the token cache itself, which costs it less than receiving batches "
                   "from workers through shared memory. The batches do not depend on it")
    m = p.add_argument_group("model")
    m.add_argument("--decoder", default="default", choices=list(DECODER_PRESETS),
                   help="which decoder: default = ours (Semantic Bridging Decoder, published widths); tiny = ours "
                   "at CPU-test widths; published = the published 4DLangVGGT head (LanguageHead_Multi, BatchNorm, "
                   "no time-sensitive decoder: video targets are then ignored with a warning); published-tiny = "
                   "that head at CPU-test widths")
    m.add_argument("--decoder-config", default=None,
                   help="JSON file or JSON string of config fields overriding the preset (DecoderConfig for ours, "
                   "PublishedDecoderConfig for the published head)")
    m.add_argument("--init", default=None, metavar="PATH",
                   help="start from these weights (weights only: fresh optimizer, epoch 0): a published "
                   "4DLangVGGT checkpoint_epoch_<N>.pth, or any decoder path model.decoder_io.load_decoder reads "
                   "(run or checkpoint folder, .safetensors); loaded strictly, refused if the architecture "
                   "differs from --decoder/--decoder-config; ignored with --resume")
    m.add_argument("--sync-bn", action="store_true",
                   help="under torchrun, convert BatchNorm to SyncBatchNorm (statistics over the global batch; "
                   "CUDA only, refused on CPU). Default: per-process BatchNorm statistics, as published")
    m.add_argument("--init-dpt-from", default=None,
                   help="initialise the DPT feature extractor from this backbone's depth head: a StreamVGGT "
                   "checkpoint, or vggt:<file or repo id> / page4d:<file> (matching tensors only; default: random "
                   "init)")
    m.add_argument("--lang-dim", type=int, default=None, help="language feature channels (default: from the targets)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=_positive_int, default=100, help="total epochs")
    o.add_argument("--stop-at-epoch", type=_positive_int, default=None,
                   help="stop after this epoch (the schedule still assumes --epochs; resume later with --resume)")
    o.add_argument("--batch-size", type=_positive_int, default=8, help="samples per process per step")
    o.add_argument("--lr", type=float, default=4e-5, help="peak learning rate")
    o.add_argument("--min-lr", type=float, default=1e-6, help="final learning rate of the cosine schedule")
    o.add_argument("--schedule", choices=["constant", "cosine"], default="constant", help="after warmup")
    o.add_argument("--warmup-epochs", type=float, default=20, help="linear warmup length in epochs")
    o.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (not on biases/norms)")
    o.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.95), help="AdamW betas")
    o.add_argument("--clip-grad", type=float, default=1.0, help="gradient-norm clip (0 = off)")
    o.add_argument("--w-l1", type=float, default=0.2, help="weight of the masked feature L1")
    o.add_argument("--w-cos", type=float, default=0.01, help="weight of the masked feature cosine loss")
    o.add_argument("--w-img", type=float, default=0.5, help="RGB loss = w_img*L1 + (1-w_img)*MSE")
    o.add_argument("--w-rgb", type=float, default=1.0, help="weight of the RGB term (0 = no RGB branch)")
    o.add_argument("--w-video", type=float, default=1.0, help="weight of the time-sensitive term")
    o.add_argument("--loss", choices=list(LOSS_KINDS), default="ours",
                   help="ours = masked means, cosine over the feature axis; published = reproduce the published "
                   "loss exactly (L1 averaged over all elements incl. masked-out ones, cosine over the image "
                   "width axis): a reproduction switch, not a recommendation")
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True,
                   help="run folder (checkpoints, last pointer, metrics.jsonl); one that already holds a run is "
                   "refused without --resume")
    r.add_argument("--resume", nargs="?", const="last", default=None,
                   help="continue from a checkpoint folder, or (no value) from <out>'s newest checkpoint (the one "
                   "<out>/last names, or a newer one a killed run saved just before updating last); the result is "
                   "byte-identical to an uninterrupted run")
    r.add_argument("--save-every", type=_positive_int, default=5, help="checkpoint every N epochs (and at the end)")
    r.add_argument("--save-published-pth", action="store_true",
                   help="with the published decoder, also write <out>/checkpoint_epoch_<N>.pth in the published "
                   "layout {epoch, model_state_dict, optimizer_state_dict, scaler, loss, args} (args as a plain "
                   "dict) for the published inference code")
    add_device_arg(r)
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="autocast precision on GPU (auto = fp16 with a grad scaler on CUDA, fp32 on CPU)")
    r.add_argument("--seed", type=int, default=42, help="random seed")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    r.add_argument("--no-val", action="store_true", help="skip the per-epoch validation loss")
    r.add_argument("--val-every", type=int, default=1,
                   help="compute the validation loss every N epochs and after the last one (default 1); it never "
                        "changes the trained weights, only how often they are measured")
    r.add_argument("--wandb", choices=["disabled", "offline", "online"], default="disabled", help="wandb mode")
    r.add_argument("--wandb-project", default="langvggt4d", help="wandb project name")
    r.add_argument("--log-every", type=_positive_int, default=10, help="log the training loss every N steps")
    r.add_argument("--no-progress", action="store_true", help="hide tqdm progress bars")
    add_logging_args(p)
    return p


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


DECODER_PRESETS = {"default": "ours", "tiny": "ours", "published": PUBLISHED, "published-tiny": PUBLISHED}


def _decoder_config(args: argparse.Namespace, ds: SceneDataset, video_dim: int
                    ) -> DecoderConfig | PublishedDecoderConfig:
    info = ds.token_info
    base = dict(dim_in=info["dim"], layers=tuple(info["layers"]), lang_dim=args.lang_dim or ds.lang_dim,
                video_dim=video_dim, rgb=args.w_rgb > 0, patch_size=info.get("patch_size", 14))
    override = {}
    if args.decoder_config:
        text = args.decoder_config
        try:
            is_file = Path(text).is_file()
        except OSError:  # a JSON string too long for a file name
            is_file = False
        try:
            override = json.loads(Path(text).read_text() if is_file else text)
        except json.JSONDecodeError as e:
            raise UserError(f"--decoder-config is not valid JSON ({e.msg} at column {e.colno})",
                            text if is_file else None, "pass a JSON object or a JSON file") from None
        if not isinstance(override, dict):
            raise UserError("--decoder-config is not a JSON object", text if is_file else None,
                            'pass a JSON object of config fields, e.g. \'{"frame_input": false}\'')
    if DECODER_PRESETS[args.decoder] == PUBLISHED:
        base.pop("video_dim")
        base.pop("rgb")  # the published head always has its RGB branch (frozen when --w-rgb 0)
        preset = PublishedDecoderConfig.tiny(**base) if args.decoder == "published-tiny" else \
            PublishedDecoderConfig(**base)
        try:
            return PublishedDecoderConfig.from_dict({**preset.to_dict(), **override})
        except (TypeError, ValueError) as e:
            raise UserError(f"--decoder-config does not fit the published head ({e})", None,
                            "pass only PublishedDecoderConfig fields (dim_in, patch_size, lang_dim, features, "
                            "hidden_dim, dpt_out_channels, layers); it has no video decoder") from None
    base.update(override)
    try:
        if args.decoder == "tiny":
            return DecoderConfig.tiny(**base)
        return DecoderConfig(**base)
    except (TypeError, ValueError) as e:
        raise UserError(f"--decoder-config does not fit our decoder ({e})", None,
                        "pass only DecoderConfig fields (see model/decoder.py)") from None


def _describe(cfg: DecoderConfig | PublishedDecoderConfig) -> str:
    d = cfg.to_dict()
    keys = (("dim_in", "features", "hidden_dim", "dpt_out_channels", "lang_dim")
            if isinstance(cfg, PublishedDecoderConfig) else
            ("dim_in", "dpt_features", "dpt_out_channels", "lang_widths", "rgb_widths", "lang_dim", "video_dim",
             "rgb", "frame_input", "norm"))
    return ", ".join(f"{k}={d[k]}" for k in keys)


def init_from(model: torch.nn.Module, path: str | Path, ds: SceneDataset | None = None,
              video_dim: int = 0) -> dict[str, Any]:
    """``--init``: load the weights ``path`` holds (published ``.pth`` or any decoder path) into ``model``,
    strictly. Raises :class:`UserError` when the file holds another kind or size of decoder, or (given the
    dataset ``ds``) one trained on tokens of another backbone, layers or width than ``ds``'s (when the file
    records them: our checkpoint folders do, a published ``.pth`` does not)."""
    src_cfg, sd, info = read_decoder(path)
    have = PUBLISHED if isinstance(src_cfg, PublishedDecoderConfig) else "ours"
    want = decoder_kind(model)
    names = {PUBLISHED: "the published head", "ours": "our decoder"}
    flags = {PUBLISHED: "--decoder published (or published-tiny)", "ours": "--decoder default (or tiny)"}
    if have != want:
        raise UserError(f"--init holds {names[have]} but this run trains {names[want]}", path,
                        f"train it with {flags[have]}, or pass another --init file")
    if ds is not None:
        misfits = decoder_misfits(src_cfg, ds, video_dim, info.get("token_info"),
                                  layers_known=info.get("layers_known", True))
        if misfits:
            raise UserError("--init does not fit this training data: " + "; ".join(misfits), path,
                            "pass a decoder trained on tokens of this backbone and layers (and targets of this "
                            "autoencoder), or train on tokens extracted like the ones it was trained on")
    try:
        load_state_strict(model, sd, path)
    except DecoderLoadError as e:
        raise UserError(e.what, path, f"choose --decoder / --decoder-config / --lang-dim to match the file "
                        f"({_describe(src_cfg)}); this run builds {_describe(model.config)}") from None
    return info


class PredictModule(torch.nn.Module):
    """The one call the trainer makes, ``decoder.predict(tokens, frame, patch_start_idx)``, as a ``forward`` (so
    DDP's hooks run) for any decoder kind. Holds the decoder as ``.decoder``; checkpoints save the decoder."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: list[torch.Tensor], frame: torch.Tensor, patch_start_idx: int) -> dict[str, Any]:
        return self.decoder.predict(tokens, frame, patch_start_idx)


def wrap_for_training(model: torch.nn.Module, dist_info: DistInfo) -> torch.nn.Module:
    """``PredictModule(model)``, inside DDP (defaults, so ``broadcast_buffers`` as published) when distributed."""
    net = PredictModule(model)
    if not dist_info.enabled:
        return net
    device = dist_info.device
    return DDP(net, device_ids=[device.index] if device.type == "cuda" else None)


def _precision(args: argparse.Namespace, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    name = {"auto": "fp16", "fp32": None, "fp16": "fp16", "bf16": "bf16"}[args.precision]
    return {"fp16": torch.float16, "bf16": torch.bfloat16, None: None}[name]


def evaluate(model: torch.nn.Module, ds: SceneDataset, indices: list[int], args: argparse.Namespace,
             dist_info: DistInfo, amp_dtype: torch.dtype | None, weights: LossWeights,
             loss_kind: str = "ours") -> dict[str, float]:
    """Mean per-sample losses over ``indices`` (sharded over ranks, summed with all-reduce)."""
    model.eval()
    mine = indices[dist_info.rank::dist_info.world_size]
    sums = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        for i in mine:
            batch = batch_to_device(collate_samples([ds[i]]), dist_info.device)
            check_finite_batch(batch, ds)
            batch = expand_targets(batch)
            with torch.autocast("cuda", dtype=amp_dtype, enabled=amp_dtype is not None) if amp_dtype else _null():
                out = model.predict(batch["tokens"], batch["frame"], ds.patch_start_idx)
            t = compute_loss(out, batch, weights, reduce=False, kind=loss_kind)
            sums += torch.tensor([t["loss"].sum().item(), t["lang"].sum().item(),
                                  t["rgb"].sum().item() if "rgb" in t else 0.0, float(len(t["loss"]))],
                                 dtype=torch.float64)
    sums = all_reduce_sum(sums.to(dist_info.device), dist_info).cpu()
    model.train()
    n = max(sums[3].item(), 1.0)
    return {"val_loss": sums[0].item() / n, "val_lang": sums[1].item() / n, "val_rgb": sums[2].item() / n,
            "val_count": int(sums[3].item())}


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


# Run arguments that say how this process was invoked, not what it trains: left out of state.json, so the
# checkpoints of a run resumed after a kill are byte-identical to those of an uninterrupted run.
INVOCATION_ARGS = ("out", "resume", "stop_at_epoch", "debug", "no_progress", "num_workers")
# Settings that change the training trajectory: a resume with other values is warned about.
TRAJECTORY_ARGS = ("batch_size", "lr", "min_lr", "schedule", "warmup_epochs", "weight_decay", "betas", "clip_grad",
                   "w_l1", "w_cos", "w_img", "w_rgb", "w_video", "loss", "seed", "precision", "train_on_eval_frames",
                   "no_video", "sync_bn")


def recorded_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run arguments ``state.json`` records (everything but :data:`INVOCATION_ARGS`)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(args).items() if k not in INVOCATION_ARGS}


def decoder_misfits(cfg: DecoderConfig | PublishedDecoderConfig, ds: SceneDataset, video_dim: int,
                    recorded_tokens: dict[str, Any] | None = None, layers_known: bool = True) -> list[str]:
    """How a decoder (its config, and the token cache it was trained on when recorded) does not fit the data."""
    meta = ds.scenes[0].cache.dir / "meta.json"
    current = ds.token_info
    tokens = token_info_mismatches(recorded_tokens or {}, current)
    out = [f"{meta}: " + ", ".join(tokens)] if tokens else []
    said = " ".join(out)
    if layers_known and [int(x) for x in cfg.layers] != [int(x) for x in current["layers"]] and "layers" not in said:
        out.append(f"the decoder reads layers {list(cfg.layers)} but {meta} holds {current['layers']}")
    if int(cfg.dim_in) != int(current["dim"]) and "token width" not in said:
        out.append(f"the decoder takes tokens of width {cfg.dim_in} but {meta} holds width {current['dim']}")
    if int(cfg.lang_dim) != int(ds.lang_dim):
        out.append(f"the decoder predicts {cfg.lang_dim} language channels but the targets in "
                   f"{ds.scenes[0].root / ds.features_subdir} have {ds.lang_dim}")
    cfg_video = int(getattr(cfg, "video_dim", 0) or 0)
    if cfg_video and cfg_video != video_dim:
        where = ds.scenes[0].root / (ds.video_subdir or "video_features-language_features_dim6")
        have = f"have {video_dim}" if video_dim else "are not used (absent, --no-video or --w-video 0)"
        out.append(f"the decoder's time-sensitive head predicts {cfg_video} channels but the video targets "
                   f"({where}) {have}")
    return out


def _check_resumed_args(info: dict[str, Any], args: argparse.Namespace) -> None:
    before = info.get("args") or {}
    now = recorded_args(args)
    keys = TRAJECTORY_ARGS + (("epochs",) if now.get("schedule") == "cosine" else ())
    diffs = [f"--{k.replace('_', '-')} {before[k]!r} -> {now[k]!r}" for k in keys
             if k in before and k in now and before[k] != now[k]]
    if diffs:
        logger.warning("resuming with other settings than the checkpoint was trained with (%s): the run will not "
                       "match an uninterrupted one", ", ".join(diffs))


def _prepare_run_dir(out_dir: Path, lock: RunDirLock, dist_info: DistInfo) -> None:
    """Rank 0: lock the run folder and remove what a killed run left there (before any rank reads it)."""
    with one_outcome(dist_info):  # a folder locked by another run stops every rank, with one error line
        if dist_info.is_main and out_dir.is_dir():
            lock.acquire()
            removed = clean_stale(out_dir)
            if removed:
                logger.info("%s: removed what an interrupted run left: %s", out_dir, ", ".join(removed))


def _resume_point(args: argparse.Namespace, out_dir: Path, dist_info) -> tuple[Any, bool]:
    """(the checkpoint to resume or None, whether the run trains the published head), after refusing a resume
    with nothing to resume and a fresh run into a folder that already holds one."""
    resume_state = None
    if args.resume:
        src = resume_point(out_dir) if args.resume == "last" else Path(args.resume)
        if src is None:
            raise UserError("nothing to resume: the run folder holds no checkpoint yet", out_dir,
                            "run the same command without --resume to start from epoch 0 (or pass --resume "
                            "<checkpoint folder>)")
        named = (out_dir / LAST).read_text().strip() if (out_dir / LAST).is_file() else None
        if args.resume == "last" and src.name != named and dist_info.is_main:
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
        published = DECODER_PRESETS[args.decoder] == PUBLISHED
        if what := existing_run(out_dir):
            raise UserError(f"the run folder already holds a training run ({what})", out_dir,
                            "add --resume to continue it, or pass another --out (or delete the folder to "
                            "start over)")
    if args.save_published_pth and not published:
        raise UserError("--save-published-pth writes the published head's checkpoint layout, but this run "
                        "trains our decoder, which the published inference code cannot load", None,
                        "add --decoder published, or drop --save-published-pth (the checkpoint folders "
                        "hold our decoder)")
    return resume_state, published


def _decoder_config_checked(args: argparse.Namespace, ds: SceneDataset, video_dim: int, resume_state):
    """The decoder config to train (the checkpoint's when resuming), refused when it does not fit the data."""
    if resume_state is not None:
        info = resume_state[2]
        cfg = decoder_config_from_dict(info["decoder_config"])
        misfits = decoder_misfits(cfg, ds, video_dim, info.get("token_info"))
        if misfits:
            raise UserError("the checkpoint does not fit this training data: " + "; ".join(misfits),
                            Path(info["path"]) / "state.json",
                            "resume on the tokens and targets it was trained on (same backbone, layers, "
                            "autoencoder and video targets), or start a new run with another --out")
        _check_resumed_args(info, args)
        return cfg
    cfg = _decoder_config(args, ds, video_dim)
    misfits = decoder_misfits(cfg, ds, video_dim)
    if misfits:
        raise UserError("the decoder does not fit the training data: " + "; ".join(misfits), None,
                        "drop --lang-dim / the --decoder-config fields that disagree with the data")
    return cfg


def _build_model(args: argparse.Namespace, cfg, ds: SceneDataset, video_dim: int, resume_state, published: bool,
                 dist_info) -> torch.nn.Module:
    """The decoder with its initial weights (--init-dpt-from, --init), frozen RGB branch for the published head
    with --w-rgb 0, BatchNorm prepared for the process group, on the device."""
    seed_everything(args.seed)
    model = build_decoder(cfg)
    if args.init_dpt_from and resume_state is None:
        copied = init_feature_extractor_from_backbone(model, args.init_dpt_from)
        if dist_info.is_main:
            logger.info("DPT feature extractor: %d tensors from %s", len(copied), args.init_dpt_from)
    if args.init and resume_state is None:
        info = init_from(model, args.init, ds=ds, video_dim=video_dim)
        if dist_info.is_main:
            logger.info("initial weights from %s (%s, epoch %s); fresh optimizer", info["path"],
                        info.get("format"), info.get("epoch"))
    elif args.init and dist_info.is_main:
        logger.info("--resume: the checkpoint's weights are used, --init is ignored")
    if published and args.w_rgb <= 0:
        for p in model.rgb_encoder.parameters():
            p.requires_grad_(False)
        for p in model.rgb_decoder.parameters():
            p.requires_grad_(False)
        if dist_info.is_main:
            logger.info("--w-rgb 0: the published head's RGB branch is kept but frozen")
    model = prepare_batchnorm(model, args.sync_bn, dist_info)
    return model.to(dist_info.device)


def _restore(resume_state, model: torch.nn.Module, optimizer, scaler, dist_info) -> tuple[int, int, list[dict]]:
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


def _loader(args: argparse.Namespace, ds: SceneDataset, train_idx: list[int], val_idx: list[int], dist_info,
            scenes_text: str) -> tuple[GlobalBatchSampler, DataLoader]:
    """The global-batch sampler and the data loader; too few frames for one batch is a clear error."""
    device = dist_info.device
    sampler = GlobalBatchSampler(ds.groups(train_idx), args.batch_size, dist_info.world_size, dist_info.rank,
                                 seed=args.seed, shuffle=True, drop_last=True)
    if len(sampler) == 0:
        sizes = [len(g) for g in ds.groups(train_idx)]
        per = f" (at most {max(sizes)} of one frame size)" if len(sizes) > 1 else ""
        fit = max(1, max(sizes) // dist_info.world_size)
        raise UserError(f"{len(train_idx)} training frame(s){per} are fewer than one global batch "
                        f"({args.batch_size} x {dist_info.world_size} process(es))", scenes_text,
                        f"pass --batch-size {fit} or lower, or add frames"
                        + ("" if args.train_on_eval_frames or not val_idx else
                           " (or --train-on-eval-frames)"))
    workers = num_workers(args)
    # on the CPU the tokens are converted to float32 while they are stacked (one pass instead of two); on a
    # GPU they travel in their storage dtype and are converted there
    collate = functools.partial(collate_samples, token_dtype=torch.float32 if device.type == "cpu" else None)
    keep_freed_memory()  # batches reuse the pages of the previous ones (utils.host_memory)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                        worker_init_fn=_worker_init)
    return sampler, loader


@dataclass
class _Step:
    """What one optimisation step needs besides the batch."""

    model: torch.nn.Module
    ddp_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    weights: LossWeights
    amp_dtype: torch.dtype | None
    warmup_steps: int
    total_steps: int


def _train_epoch(args: argparse.Namespace, epoch: int, global_step: int, loader: DataLoader, ds: SceneDataset,
                 st: _Step, dist_info, out_dir: Path, wb) -> tuple[int, torch.Tensor]:
    """One epoch of optimisation steps; -> (global step, summed [loss, language loss, steps] over all ranks)."""
    device = dist_info.device
    st.ddp_model.train()
    sums = torch.zeros(3, dtype=torch.float64)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}",
               disable=args.no_progress or not dist_info.is_main, leave=False)
    batches = iter(bar)
    while True:
        # a file that fails while one rank reads it stops every rank (no rank is left in DDP's all-reduce); every
        # rank has the same number of batches
        with one_outcome(dist_info):
            batch = next(batches, None)
            if batch is not None:
                batch = batch_to_device(batch, device)  # tokens, frame: float32
                check_finite_batch(batch, ds)
        if batch is None:
            break
        lr = lr_at(global_step, args.lr, st.warmup_steps, st.total_steps, args.schedule, args.min_lr)
        set_lr(st.optimizer, lr)
        batch = expand_targets(batch)  # the per-pixel targets, gathered on the device
        ctx = torch.autocast("cuda", dtype=st.amp_dtype) if st.amp_dtype is not None else _null()
        with ctx:
            out = st.ddp_model(batch["tokens"], batch["frame"], ds.patch_start_idx)
        terms = compute_loss(out, batch, st.weights, kind=args.loss)
        loss = terms["loss"]
        with one_outcome(dist_info):  # one rank's non-finite loss stops every rank before the backward pass
            if not torch.isfinite(loss):
                raise UserError(f"training diverged: non-finite loss {loss.item()} at epoch {epoch + 1}, step "
                                f"{global_step + 1}", out_dir,
                                "lower --lr, keep --clip-grad on, or use --precision fp32/bf16; resume from "
                                "the last checkpoint with --resume")
        st.optimizer.zero_grad(set_to_none=True)
        st.scaler.scale(loss).backward()
        if args.clip_grad > 0:
            st.scaler.unscale_(st.optimizer)
            torch.nn.utils.clip_grad_norm_(st.model.parameters(), args.clip_grad)
        st.scaler.step(st.optimizer)
        st.scaler.update()
        global_step += 1
        sums += torch.tensor([loss.item(), terms["lang"].item(), 1.0], dtype=torch.float64)
        if dist_info.is_main:
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
            if wb is not None and global_step % args.log_every == 0:
                wb.log({k: v.item() for k, v in terms.items()} | {"lr": lr}, step=global_step)
    return global_step, all_reduce_sum(sums.to(device), dist_info).cpu()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train; returns a summary (final epoch, losses per epoch, checkpoint path)."""
    setup_logging_from(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    dist_info = init_distributed(resolve_device(args.device))
    device = dist_info.device
    out_dir = Path(args.out)
    lock = RunDirLock(out_dir)
    created = not out_dir.exists()
    try:
        _prepare_run_dir(out_dir, lock, dist_info)
        with one_outcome(dist_info):  # the checks fail on every rank alike: one error line for all
            resume_state, published = _resume_point(args, out_dir, dist_info)
            ds = SceneDataset(args.scenes, tokens_subdir=args.tokens_subdir, features_subdir=args.features_subdir,
                              video_subdir=None if args.no_video or published else args.video_features_subdir,
                              train_on_eval_frames=args.train_on_eval_frames, cache_in_memory=args.cache_in_memory,
                              read_tokens_in_collate=True)
            if published and not args.no_video and dist_info.is_main and \
                    any((s.root / args.video_features_subdir).is_dir() for s in ds.scenes):
                logger.warning("the published head has no time-sensitive decoder: the video targets (%s/) are not "
                               "trained (use our decoder, --decoder default, to train them)",
                               args.video_features_subdir)
            train_idx, val_idx = ds.split_indices()
            scenes_text = ", ".join(str(s.root) for s in ds.scenes)
            if not train_idx:
                raise UserError("no training frames left after holding out the evaluation frames", scenes_text,
                                "add scenes or pass --train-on-eval-frames")
            video_dim = ds.video_dim if ds.video_dim and args.w_video > 0 else 0
            cfg = _decoder_config_checked(args, ds, video_dim, resume_state)
            model = _build_model(args, cfg, ds, video_dim, resume_state, published, dist_info)
            optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr,
                                          betas=tuple(args.betas))
            amp_dtype = _precision(args, device)
            scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
            start_epoch, global_step, history = _restore(resume_state, model, optimizer, scaler, dist_info)
        ddp_model = wrap_for_training(model, dist_info)
        with one_outcome(dist_info):  # rank 0 alone locks the run folder and writes to it
            sampler, loader = _loader(args, ds, train_idx, val_idx, dist_info, scenes_text)
            if dist_info.is_main:
                out_dir.mkdir(parents=True, exist_ok=True)
                lock.acquire()
                restart_metrics(out_dir, history[:start_epoch])
        steps_per_epoch = len(sampler)
        weights = LossWeights(l1=args.w_l1, cos=args.w_cos, img=args.w_img, rgb=args.w_rgb, video=args.w_video)
        st = _Step(model, ddp_model, optimizer, scaler, weights, amp_dtype,
                   warmup_steps=int(round(args.warmup_epochs * steps_per_epoch)),
                   total_steps=steps_per_epoch * args.epochs)
        if args.loss != "ours" and dist_info.is_main:
            logger.info("loss: the published formulas (--loss %s), a reproduction switch", args.loss)
        wb = None
        if dist_info.is_main and args.wandb != "disabled":
            import wandb

            wb = wandb.init(project=args.wandb_project, mode=args.wandb, dir=str(out_dir), config=vars(args),
                            resume="allow")
        if dist_info.is_main:
            logger.info("training on %d frames (%d held out) of %d scene(s); %d steps/epoch; %s decoder %.2fM params",
                        len(train_idx), len(val_idx), len(ds.scenes), steps_per_epoch, decoder_kind(model),
                        sum(p.numel() for p in model.parameters()) / 1e6)

        end_epoch = args.epochs if args.stop_at_epoch is None else min(args.epochs, args.stop_at_epoch)
        last_ckpt = None
        for epoch in range(start_epoch, end_epoch):
            seed_everything(args.seed * 1_000_003 + epoch * 1009 + dist_info.rank)
            sampler.set_epoch(epoch)
            t0 = time.time()
            global_step, sums = _train_epoch(args, epoch, global_step, loader, ds, st, dist_info, out_dir, wb)
            record: dict[str, Any] = {"epoch": epoch + 1, "step": global_step,
                                      "train_loss": sums[0].item() / max(sums[2].item(), 1.0),
                                      "train_lang": sums[1].item() / max(sums[2].item(), 1.0)}
            if val_idx and not args.no_val and ((epoch + 1) % max(1, args.val_every) == 0 or epoch + 1 == end_epoch):
                record.update(evaluate(model, ds, val_idx, args, dist_info, amp_dtype, weights, args.loss))
            history.append(record)  # deterministic: the wall-clock seconds go to metrics.jsonl only
            if dist_info.is_main:
                seconds = round(time.time() - t0, 3)
                logger.info("epoch %d (%.1f s): %s", epoch + 1, seconds,
                            {k: round(v, 6) if isinstance(v, float) else v for k, v in record.items()})
                append_metrics(out_dir, {**record, "seconds": seconds})
                if wb is not None:
                    wb.log(record | {"seconds": seconds}, step=global_step)
            if (epoch + 1) % args.save_every == 0 or epoch + 1 == end_epoch:
                with one_outcome(dist_info):  # rank 0 writes; a full disk there stops every rank cleanly
                    if dist_info.is_main:
                        state = {"decoder_config": cfg.to_dict(), "global_step": global_step, "history": history,
                                 "args": recorded_args(args),
                                 "patch_start_idx": ds.patch_start_idx, "token_info": ds.token_info}
                        last_ckpt = save_checkpoint(out_dir, epoch + 1, model, optimizer, state, scaler)
                        if args.save_published_pth:
                            save_published_pth(out_dir, epoch + 1, model, optimizer,
                                               scaler if scaler.is_enabled() else None, record["train_loss"],
                                               state["args"])
        if wb is not None:
            wb.finish()
        final = history[-1] if history else {}
        return {"epoch": end_epoch, "global_step": global_step, "history": history,
                "checkpoint": str(last_ckpt) if last_ckpt else None, "final": final,
                "rank": dist_info.rank, "world_size": dist_info.world_size}
    except BaseException:
        if created and dist_info.is_main and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # a run that failed before writing anything leaves no empty run folder behind
        raise
    finally:
        lock.release()
        cleanup_distributed()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``train.py``: parse ``argv`` and train. Expected failures raise :class:`UserError` (a token file that turns
    out to be bad while training included); ``train.py`` prints them as one ``error:`` line (exit code 2)."""
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except TokenCacheError as e:  # "<file>: <what>; <fix>" from preprocess.token_cache, read during training
        raise UserError(str(e)) from None
    except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM: one line (utils.cli.cli_main), exit code 130 / 143
        raise interrupted(e, "the checkpoints saved so far are kept", args.out,
                          "add --resume to the same command to continue from the last one") from None
    if summary["rank"] == 0:
        fin = summary["final"]
        msg = ", ".join(f"{k}={v:.5g}" if isinstance(v, float) and math.isfinite(v) else f"{k}={v}"
                        for k, v in fin.items())
        print(f"done: epoch {summary['epoch']}, step {summary['global_step']}; {msg}; checkpoint {summary['checkpoint']}")
    return summary
