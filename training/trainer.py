"""The training loop behind ``train.py`` (single process or torchrun/DDP).

Determinism: the model is initialised from ``--seed``; every epoch reseeds torch/numpy/random with
``(seed, epoch, rank)`` and the batch sampler with ``(seed, epoch)``, so a run resumed from the
checkpoint of epoch N continues bit for bit like an uninterrupted run (model, optimizer, AMP scaler,
global step and learning-rate position are restored from the checkpoint).
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

from model.decoder import DecoderConfig, SemanticBridgingDecoder, init_feature_extractor_from_backbone
from preprocess.token_cache import TokenCacheError
from training.checkpoint import load_checkpoint, save_checkpoint
from training.dataset import DatasetError, SceneDataset, collate_samples
from training.distributed import DistInfo, all_reduce_sum, barrier, cleanup_distributed, init_distributed
from training.loss import LossWeights, compute_loss
from training.sampler import GlobalBatchSampler
from training.schedule import lr_at, param_groups, set_lr
from utils.device import resolve_device

logger = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train the Semantic Bridging Decoder on cached StreamVGGT tokens and semantic targets. "
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
    m.add_argument("--decoder", default="default", choices=["default", "tiny"],
                   help="decoder width preset (default = the published widths)")
    m.add_argument("--decoder-config", default=None,
                   help="JSON file or JSON string of DecoderConfig fields overriding the preset")
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
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="run folder (checkpoints, last pointer, metrics.jsonl)")
    r.add_argument("--resume", nargs="?", const="last", default=None,
                   help="continue from a checkpoint folder, or (no value) from <out>/last")
    r.add_argument("--save-every", type=int, default=5, help="checkpoint every N epochs (and at the end)")
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
    return p


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _decoder_config(args: argparse.Namespace, ds: SceneDataset, video_dim: int) -> DecoderConfig:
    info = ds.token_info
    base = dict(dim_in=info["dim"], layers=tuple(info["layers"]), lang_dim=args.lang_dim or ds.lang_dim,
                video_dim=video_dim, rgb=args.w_rgb > 0, patch_size=info.get("patch_size", 14))
    if args.decoder_config:
        text = args.decoder_config
        path = Path(text)
        override = json.loads(path.read_text() if path.is_file() else text)
        base.update(override)
    if args.decoder == "tiny":
        return DecoderConfig.tiny(**base)
    return DecoderConfig(**base)


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
             dist_info: DistInfo, amp_dtype: torch.dtype | None, weights: LossWeights) -> dict[str, float]:
    """Mean per-sample losses over ``indices`` (sharded over ranks, summed with all-reduce)."""
    model.eval()
    mine = indices[dist_info.rank::dist_info.world_size]
    sums = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        for i in mine:
            batch = _move(collate_samples([ds[i]]), dist_info.device)
            with torch.autocast("cuda", dtype=amp_dtype, enabled=amp_dtype is not None) if amp_dtype else _null():
                out = model(batch["tokens"], batch["frame"], ds.patch_start_idx)
            t = compute_loss(out, batch, weights, reduce=False)
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
        ds = SceneDataset(args.scenes, tokens_subdir=args.tokens_subdir, features_subdir=args.features_subdir,
                          video_subdir=None if args.no_video else args.video_features_subdir,
                          train_on_eval_frames=args.train_on_eval_frames, cache_in_memory=args.cache_in_memory)
        train_idx, val_idx = ds.split_indices()
        if not train_idx:
            raise ValueError("no training frames left after holding out the evaluation frames; "
                             "add scenes or pass --train-on-eval-frames")
        video_dim = ds.video_dim if ds.video_dim and args.w_video > 0 else 0

        resume_state = None
        if args.resume:
            src = out_dir if args.resume == "last" else Path(args.resume)
            resume_state = load_checkpoint(src)
            cfg = DecoderConfig.from_dict(resume_state[2]["decoder_config"])
        else:
            cfg = _decoder_config(args, ds, video_dim)

        seed_everything(args.seed)
        model = SemanticBridgingDecoder(cfg)
        if args.init_dpt_from and resume_state is None:
            copied = init_feature_extractor_from_backbone(model, args.init_dpt_from)
            if dist_info.is_main:
                logger.info("DPT feature extractor: %d tensors from %s", len(copied), args.init_dpt_from)
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

        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None) \
            if dist_info.enabled else model
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

        wb = None
        if dist_info.is_main and args.wandb != "disabled":
            import wandb

            wb = wandb.init(project=args.wandb_project, mode=args.wandb, dir=str(out_dir), config=vars(args),
                            resume="allow")
        if dist_info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            logger.info("training on %d frames (%d held out) of %d scene(s); %d steps/epoch; decoder %.2fM params",
                        len(train_idx), len(val_idx), len(ds.scenes), steps_per_epoch,
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
                terms = compute_loss(out, batch, weights)
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
                record.update(evaluate(model, ds, val_idx, args, dist_info, amp_dtype, weights))
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
