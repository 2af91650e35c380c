"""The training loop behind ``train.py`` (single process or torchrun/DDP).

Determinism: the model is initialised from ``--seed``; every epoch reseeds torch/numpy/random with
``(seed, epoch, rank)`` and the batch sampler with ``(seed, epoch)``, so a run resumed from the
checkpoint of epoch N continues bit for bit like an uninterrupted run (model, optimizer, AMP scaler,
global step and learning-rate position are restored from the checkpoint).

Decoders: ours (:class:`~model.decoder.SemanticBridgingDecoder`, the default) or the published head
(:class:`~model.published_decoder.PublishedLanguageHead`, ``--decoder published``); both are called through
their shared ``predict(tokens, frame, patch_start_idx)`` interface. The published head has no time-sensitive
decoder: with ``--decoder published`` video targets are not loaded and a warning says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

from model.decoder import DecoderConfig, init_feature_extractor_from_backbone
from model.decoder_io import (
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
from training.dataset import DatasetError, SceneDataset, collate_samples
from training.distributed import DistInfo, all_reduce_sum, barrier, cleanup_distributed, init_distributed
from training.loss import LOSS_KINDS, LossWeights, compute_loss
from training.sampler import GlobalBatchSampler
from training.schedule import lr_at, param_groups, set_lr
from utils.cli import UserError
from utils.device import resolve_device

logger = logging.getLogger("train")


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
    d.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes per rank")
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
                   help="initialise the DPT feature extractor from this StreamVGGT checkpoint's depth head "
                   "(matching tensors only; default: random init)")
    m.add_argument("--lang-dim", type=int, default=None, help="language feature channels (default: from the targets)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=100, help="total epochs")
    o.add_argument("--stop-at-epoch", type=int, default=None,
                   help="stop after this epoch (the schedule still assumes --epochs; resume later with --resume)")
    o.add_argument("--batch-size", type=int, default=8, help="samples per process per step")
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
    r.add_argument("--out", required=True, help="run folder (checkpoints, last pointer, metrics.jsonl)")
    r.add_argument("--resume", nargs="?", const="last", default=None,
                   help="continue from a checkpoint folder, or (no value) from <out>/last")
    r.add_argument("--save-every", type=int, default=5, help="checkpoint every N epochs (and at the end)")
    r.add_argument("--save-published-pth", action="store_true",
                   help="with the published decoder, also write <out>/checkpoint_epoch_<N>.pth in the published "
                   "layout {epoch, model_state_dict, optimizer_state_dict, scaler, loss, args} (args as a plain "
                   "dict) for the published inference code")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda")
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="autocast precision on GPU (auto = fp16 with a grad scaler on CUDA, fp32 on CPU)")
    r.add_argument("--seed", type=int, default=42, help="random seed")
    r.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    r.add_argument("--no-val", action="store_true", help="skip the per-epoch validation loss")
    r.add_argument("--wandb", choices=["disabled", "offline", "online"], default="disabled", help="wandb mode")
    r.add_argument("--wandb-project", default="langvggt4d", help="wandb project name")
    r.add_argument("--log-every", type=int, default=10, help="log the training loss every N steps")
    r.add_argument("--no-progress", action="store_true", help="hide tqdm progress bars")
    r.add_argument("--debug", action="store_true", help="show the traceback of expected errors too")
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
        path = Path(text)
        override = json.loads(path.read_text() if path.is_file() else text)
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
    if args.decoder == "tiny":
        return DecoderConfig.tiny(**base)
    return DecoderConfig(**base)


def _describe(cfg: DecoderConfig | PublishedDecoderConfig) -> str:
    d = cfg.to_dict()
    keys = (("dim_in", "features", "hidden_dim", "dpt_out_channels", "lang_dim")
            if isinstance(cfg, PublishedDecoderConfig) else
            ("dim_in", "dpt_features", "dpt_out_channels", "lang_widths", "rgb_widths", "lang_dim", "video_dim",
             "rgb", "frame_input", "norm"))
    return ", ".join(f"{k}={d[k]}" for k in keys)


def init_from(model: torch.nn.Module, path: str | Path) -> dict[str, Any]:
    """``--init``: load the weights ``path`` holds (published ``.pth`` or any decoder path) into ``model``,
    strictly. Raises :class:`UserError` when the file holds another kind or size of decoder."""
    src_cfg, sd, info = read_decoder(path)
    have = PUBLISHED if isinstance(src_cfg, PublishedDecoderConfig) else "ours"
    want = decoder_kind(model)
    names = {PUBLISHED: "the published head", "ours": "our decoder"}
    flags = {PUBLISHED: "--decoder published (or published-tiny)", "ours": "--decoder default (or tiny)"}
    if have != want:
        raise UserError(f"--init holds {names[have]} but this run trains {names[want]}", path,
                        f"train it with {flags[have]}, or pass another --init file")
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


def _move(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, list) and v and torch.is_tensor(v[0]):
            out[k] = [t.to(device, non_blocking=True).float() for t in v]
        else:
            out[k] = v
    return out


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
            batch = _move(collate_samples([ds[i]]), dist_info.device)
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train; returns a summary (final epoch, losses per epoch, checkpoint path)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    dist_info = init_distributed(resolve_device(args.device))
    device = dist_info.device
    out_dir = Path(args.out)
    try:
        resume_state = None
        if args.resume:
            src = out_dir if args.resume == "last" else Path(args.resume)
            resume_state = load_checkpoint(src)
            published = resume_state[2]["decoder_config"].get("kind") == PUBLISHED
        else:
            published = DECODER_PRESETS[args.decoder] == PUBLISHED
        if args.save_published_pth and not published:
            raise UserError("--save-published-pth writes the published head's checkpoint layout, but this run "
                            "trains our decoder, which the published inference code cannot load", None,
                            "add --decoder published, or drop --save-published-pth (the checkpoint folders "
                            "hold our decoder)")
        ds = SceneDataset(args.scenes, tokens_subdir=args.tokens_subdir, features_subdir=args.features_subdir,
                          video_subdir=None if args.no_video or published else args.video_features_subdir,
                          train_on_eval_frames=args.train_on_eval_frames, cache_in_memory=args.cache_in_memory)
        if published and not args.no_video and dist_info.is_main and \
                any((s.root / args.video_features_subdir).is_dir() for s in ds.scenes):
            logger.warning("the published head has no time-sensitive decoder: the video targets (%s/) are not "
                           "trained (use our decoder, --decoder default, to train them)", args.video_features_subdir)
        train_idx, val_idx = ds.split_indices()
        if not train_idx:
            raise ValueError("no training frames left after holding out the evaluation frames; "
                             "add scenes or pass --train-on-eval-frames")
        video_dim = ds.video_dim if ds.video_dim and args.w_video > 0 else 0

        if resume_state is not None:
            cfg = decoder_config_from_dict(resume_state[2]["decoder_config"])
        else:
            cfg = _decoder_config(args, ds, video_dim)

        seed_everything(args.seed)
        model = build_decoder(cfg)
        if args.init_dpt_from and resume_state is None:
            copied = init_feature_extractor_from_backbone(model, args.init_dpt_from)
            if dist_info.is_main:
                logger.info("DPT feature extractor: %d tensors from %s", len(copied), args.init_dpt_from)
        if args.init and resume_state is None:
            info = init_from(model, args.init)
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
        model = model.to(device)
        optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=tuple(args.betas))
        amp_dtype = _precision(args, device)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        start_epoch, global_step, history = 0, 0, []
        if resume_state is not None:
            model_sd, optim_sd, info = resume_state
            model.load_state_dict(model_sd, strict=True)
            if optim_sd is not None:
                optimizer.load_state_dict(optim_sd)
            if info.get("scaler") and scaler.is_enabled():
                scaler.load_state_dict(info["scaler"])
            start_epoch, global_step, history = info["epoch"], info["global_step"], info.get("history", [])
            if dist_info.is_main:
                logger.info("resumed from %s (epoch %d, step %d)", info["path"], start_epoch, global_step)

        ddp_model = wrap_for_training(model, dist_info)
        sampler = GlobalBatchSampler(ds.groups(train_idx), args.batch_size, dist_info.world_size, dist_info.rank,
                                     seed=args.seed, shuffle=True, drop_last=True)
        if len(sampler) == 0:
            raise ValueError(f"{len(train_idx)} training frames are fewer than one global batch "
                             f"({args.batch_size} x {dist_info.world_size}); lower --batch-size")
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_samples, num_workers=args.num_workers,
                            pin_memory=device.type == "cuda")
        steps_per_epoch = len(sampler)
        total_steps = steps_per_epoch * args.epochs
        warmup_steps = int(round(args.warmup_epochs * steps_per_epoch))
        weights = LossWeights(l1=args.w_l1, cos=args.w_cos, img=args.w_img, rgb=args.w_rgb, video=args.w_video)
        if args.loss != "ours" and dist_info.is_main:
            logger.info("loss: the published formulas (--loss %s), a reproduction switch", args.loss)

        wb = None
        if dist_info.is_main and args.wandb != "disabled":
            import wandb

            wb = wandb.init(project=args.wandb_project, mode=args.wandb, dir=str(out_dir), config=vars(args),
                            resume="allow")
        if dist_info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            logger.info("training on %d frames (%d held out) of %d scene(s); %d steps/epoch; %s decoder %.2fM params",
                        len(train_idx), len(val_idx), len(ds.scenes), steps_per_epoch, decoder_kind(model),
                        sum(p.numel() for p in model.parameters()) / 1e6)

        end_epoch = args.epochs if args.stop_at_epoch is None else min(args.epochs, args.stop_at_epoch)
        last_ckpt = None
        for epoch in range(start_epoch, end_epoch):
            seed_everything(args.seed * 1_000_003 + epoch * 1009 + dist_info.rank)
            sampler.set_epoch(epoch)
            ddp_model.train()
            sums = torch.zeros(3, dtype=torch.float64)
            t0 = time.time()
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}",
                       disable=args.no_progress or not dist_info.is_main, leave=False)
            for batch in bar:
                lr = lr_at(global_step, args.lr, warmup_steps, total_steps, args.schedule, args.min_lr)
                set_lr(optimizer, lr)
                batch = _move(batch, device)
                ctx = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None else _null()
                with ctx:
                    out = ddp_model(batch["tokens"], batch["frame"], ds.patch_start_idx)
                terms = compute_loss(out, batch, weights, kind=args.loss)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch}, step {global_step}")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if args.clip_grad > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                global_step += 1
                sums += torch.tensor([loss.item(), terms["lang"].item(), 1.0], dtype=torch.float64)
                if dist_info.is_main:
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
                    if wb is not None and global_step % args.log_every == 0:
                        wb.log({k: v.item() for k, v in terms.items()} | {"lr": lr}, step=global_step)
            sums = all_reduce_sum(sums.to(device), dist_info).cpu()
            record: dict[str, Any] = {"epoch": epoch + 1, "step": global_step,
                                      "train_loss": sums[0].item() / max(sums[2].item(), 1.0),
                                      "train_lang": sums[1].item() / max(sums[2].item(), 1.0),
                                      "seconds": round(time.time() - t0, 3)}
            if val_idx and not args.no_val:
                record.update(evaluate(model, ds, val_idx, args, dist_info, amp_dtype, weights, args.loss))
            history.append(record)
            if dist_info.is_main:
                logger.info("epoch %d: %s", epoch + 1, {k: round(v, 6) if isinstance(v, float) else v
                                                        for k, v in record.items()})
                with open(out_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                if wb is not None:
                    wb.log(record, step=global_step)
            if (epoch + 1) % args.save_every == 0 or epoch + 1 == end_epoch:
                if dist_info.is_main:
                    state = {"decoder_config": cfg.to_dict(), "global_step": global_step, "history": history,
                             "args": {k: v for k, v in vars(args).items()},
                             "patch_start_idx": ds.patch_start_idx, "token_info": ds.token_info}
                    last_ckpt = save_checkpoint(out_dir, epoch + 1, model, optimizer, state, scaler)
                    if args.save_published_pth:
                        save_published_pth(out_dir, epoch + 1, model, optimizer,
                                           scaler if scaler.is_enabled() else None, record["train_loss"],
                                           state["args"])
                barrier(dist_info)
        if wb is not None:
            wb.finish()
        final = history[-1] if history else {}
        return {"epoch": end_epoch, "global_step": global_step, "history": history,
                "checkpoint": str(last_ckpt) if last_ckpt else None, "final": final,
                "rank": dist_info.rank, "world_size": dist_info.world_size}
    finally:
        cleanup_distributed()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except (DatasetError, TokenCacheError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    if summary["rank"] == 0:
        fin = summary["final"]
        msg = ", ".join(f"{k}={v:.5g}" if isinstance(v, float) and math.isfinite(v) else f"{k}={v}"
                        for k, v in fin.items())
        print(f"done: epoch {summary['epoch']}, step {summary['global_step']}; {msg}; checkpoint {summary['checkpoint']}")
    return summary
