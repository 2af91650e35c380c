"""The epoch loop of a training run: the optimisation steps, the validation loss, the metrics, the checkpoints and
wandb, over the :class:`training.setup.Training` that :func:`training.setup.set_up` made.

Determinism: every epoch reseeds torch/numpy/random with ``(seed, epoch, rank)`` and the batch sampler with
``(seed, epoch)``, so a run resumed from the checkpoint of epoch N continues bit for bit like an uninterrupted run.
The one wall-clock field, ``seconds``, goes to ``metrics.jsonl`` only, never to a checkpoint's ``state.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from model.decoder_io import decoder_kind
from training.checkpoint import save_checkpoint, save_published_pth
from training.config import TrainConfig
from training.dataset import SceneDataset, check_finite_batch, collate_samples
from training.decoder_setup import seed_everything
from training.distributed import DistInfo, all_reduce_sum, one_outcome
from training.loss import LossWeights, compute_loss
from training.run_dir import append_metrics
from training.schedule import lr_at, set_lr
from training.setup import Training
from training.targets import batch_to_device, expand_targets
from utils.cli import UserError

logger = logging.getLogger("train")


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


def evaluate(model: torch.nn.Module, ds: SceneDataset, indices: list[int], dist_info: DistInfo,
             amp_dtype: torch.dtype | None, weights: LossWeights, loss_kind: str = "ours") -> dict[str, float]:
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


def _train_epoch(cfg: TrainConfig, epoch: int, global_step: int, t: Training, dist_info: DistInfo,
                 out_dir: Path, wb: Any) -> tuple[int, torch.Tensor]:
    """One epoch of optimisation steps; -> (global step, summed [loss, language loss, steps] over all ranks)."""
    device = dist_info.device
    ds = t.ds
    t.ddp_model.train()
    sums = torch.zeros(3, dtype=torch.float64)
    bar = tqdm(t.loader, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=cfg.no_progress or not dist_info.is_main, leave=False)
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
        lr = lr_at(global_step, cfg.lr, t.warmup_steps, t.total_steps, cfg.schedule, cfg.min_lr)
        set_lr(t.optimizer, lr)
        batch = expand_targets(batch)  # the per-pixel targets, gathered on the device
        ctx = torch.autocast("cuda", dtype=t.amp_dtype) if t.amp_dtype is not None else _null()
        with ctx:
            out = t.ddp_model(batch["tokens"], batch["frame"], ds.patch_start_idx)
        terms = compute_loss(out, batch, t.weights, kind=cfg.loss)
        loss = terms["loss"]
        with one_outcome(dist_info):  # one rank's non-finite loss stops every rank before the backward pass
            if not torch.isfinite(loss):
                raise UserError(f"training diverged: non-finite loss {loss.item()} at epoch {epoch + 1}, step "
                                f"{global_step + 1}", out_dir,
                                "lower --lr, keep --clip-grad on, or use --precision fp32/bf16; resume from "
                                "the last checkpoint with --resume")
        t.optimizer.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        if cfg.clip_grad > 0:
            t.scaler.unscale_(t.optimizer)
            torch.nn.utils.clip_grad_norm_(t.model.parameters(), cfg.clip_grad)
        t.scaler.step(t.optimizer)
        t.scaler.update()
        global_step += 1
        sums += torch.tensor([loss.item(), terms["lang"].item(), 1.0], dtype=torch.float64)
        if dist_info.is_main:
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
            if wb is not None and global_step % cfg.log_every == 0:
                wb.log({k: v.item() for k, v in terms.items()} | {"lr": lr}, step=global_step)
    return global_step, all_reduce_sum(sums.to(device), dist_info).cpu()


def train_epochs(cfg: TrainConfig, t: Training, out_dir: Path, dist_info: DistInfo) -> dict[str, Any]:
    """Run the epochs from ``t.start_epoch`` to ``--epochs`` (or ``--stop-at-epoch``); -> the run's summary."""
    if cfg.loss != "ours" and dist_info.is_main:
        logger.info("loss: the published formulas (--loss %s), a reproduction switch", cfg.loss)
    wb = None
    if dist_info.is_main and cfg.wandb != "disabled":
        import wandb

        wb = wandb.init(project=cfg.wandb_project, mode=cfg.wandb, dir=str(out_dir),
                        config=dataclasses.asdict(cfg), resume="allow")
    if dist_info.is_main:
        logger.info("training on %d frames (%d held out) of %d scene(s); %d steps/epoch; %s decoder %.2fM params",
                    len(t.train_idx), len(t.val_idx), len(t.ds.scenes), len(t.sampler), decoder_kind(t.model),
                    sum(p.numel() for p in t.model.parameters()) / 1e6)

    end_epoch = cfg.epochs if cfg.stop_at_epoch is None else min(cfg.epochs, cfg.stop_at_epoch)
    global_step, history = t.global_step, t.history
    last_ckpt = None
    for epoch in range(t.start_epoch, end_epoch):
        seed_everything(cfg.seed * 1_000_003 + epoch * 1009 + dist_info.rank)
        t.sampler.set_epoch(epoch)
        t0 = time.time()
        global_step, sums = _train_epoch(cfg, epoch, global_step, t, dist_info, out_dir, wb)
        record: dict[str, Any] = {"epoch": epoch + 1, "step": global_step,
                                  "train_loss": sums[0].item() / max(sums[2].item(), 1.0),
                                  "train_lang": sums[1].item() / max(sums[2].item(), 1.0)}
        if t.val_idx and not cfg.no_val and ((epoch + 1) % max(1, cfg.val_every) == 0 or epoch + 1 == end_epoch):
            record.update(evaluate(t.model, t.ds, t.val_idx, dist_info, t.amp_dtype, t.weights, cfg.loss))
        history.append(record)  # deterministic: the wall-clock seconds go to metrics.jsonl only
        if dist_info.is_main:
            seconds = round(time.time() - t0, 3)
            logger.info("epoch %d (%.1f s): %s", epoch + 1, seconds,
                        {k: round(v, 6) if isinstance(v, float) else v for k, v in record.items()})
            append_metrics(out_dir, {**record, "seconds": seconds})
            if wb is not None:
                wb.log(record | {"seconds": seconds}, step=global_step)
        if (epoch + 1) % cfg.save_every == 0 or epoch + 1 == end_epoch:
            with one_outcome(dist_info):  # rank 0 writes; a full disk there stops every rank cleanly
                if dist_info.is_main:
                    state = {"decoder_config": t.decoder_config.to_dict(), "global_step": global_step,
                             "history": history, "args": cfg.recorded(),
                             "patch_start_idx": t.ds.patch_start_idx, "token_info": t.ds.token_info}
                    last_ckpt = save_checkpoint(out_dir, epoch + 1, t.model, t.optimizer, state, t.scaler)
                    if cfg.save_published_pth:
                        save_published_pth(out_dir, epoch + 1, t.model, t.optimizer,
                                           t.scaler if t.scaler.is_enabled() else None, record["train_loss"],
                                           state["args"])
    if wb is not None:
        wb.finish()
    final = history[-1] if history else {}
    return {"epoch": end_epoch, "global_step": global_step, "history": history,
            "checkpoint": str(last_ckpt) if last_ckpt else None, "final": final,
            "rank": dist_info.rank, "world_size": dist_info.world_size}
