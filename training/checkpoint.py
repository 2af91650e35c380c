"""Checkpoints without pickle: ``<out>/checkpoint_epoch_<N>/`` + a ``<out>/last`` pointer.

A checkpoint folder holds

- ``model.safetensors``: the decoder's state dict;
- ``optim.safetensors``: every tensor of the optimizer state, keyed ``state.<param id>.<name>``;
- ``state.json``: decoder config, epoch, global step, run arguments, the optimizer skeleton
  (param groups and non-tensor state), the AMP grad-scaler state, and free-form extras.

The folder is written under a temporary name and renamed into place, and ``last`` (a one-line text
file naming the folder) is replaced atomically afterwards, so an interrupted save never leaves a
half-written checkpoint behind ``last``; what a kill leaves (the temporary folder, an old folder moved
aside) is removed or put back by the next run (:func:`training.run_dir.clean_stale`), and ``--resume`` also
finds a checkpoint renamed into place just before a kill kept ``last`` from naming it
(:func:`training.run_dir.resume_point`). Reading (and building the decoder a checkpoint holds) lives in
:mod:`model.decoder_io`.

:func:`save_published_pth` (``train.py --save-published-pth``) also writes ``<out>/checkpoint_epoch_<N>.pth`` in
the published 4DLangVGGT layout ``{'epoch', 'model_state_dict', 'optimizer_state_dict', 'scaler', 'loss',
'args'}`` for the published inference code (which reads only ``model_state_dict``). It is the one pickle this
project writes; ``args`` is a plain dict (the published file holds an ``argparse.Namespace``), so the file
loads with ``torch.load(weights_only=True)`` -- the default of torch >= 2.6 -- without allowing any class.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from model.decoder_io import (  # noqa: F401  (reading lives in model/, re-exported for training code)
    LAST,
    load_checkpoint,
    load_decoder,
    resolve_checkpoint_folder,
    unflatten_optimizer_state,
)
from utils.io import atomic_path, save_json_atomic, save_safetensors_atomic


def checkpoint_dir(out_dir: str | os.PathLike, epoch: int) -> Path:
    return Path(out_dir) / f"checkpoint_epoch_{epoch}"


def flatten_optimizer_state(sd: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` -> (tensors, JSON skeleton); the inverse is :func:`unflatten_optimizer_state`."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton_state: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        plain = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{name}"] = value
            else:
                plain[name] = value
        skeleton_state[str(pid)] = plain
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"state": skeleton_state, "param_groups": groups}


def _to_cpu(obj: Any) -> Any:
    """Tensors (nested in dicts / lists / tuples) detached onto the CPU; everything else as is."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _plain(obj: Any) -> Any:
    """Run arguments as plain data (str, int, float, bool, None, lists, dicts) for a weights-only pickle."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return str(obj)


def published_pth_path(out_dir: str | os.PathLike, epoch: int) -> Path:
    return Path(out_dir) / f"checkpoint_epoch_{epoch}.pth"


def save_published_pth(
    out_dir: str | os.PathLike,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    loss: float | None = None,
    args: dict[str, Any] | None = None,
) -> Path:
    """Write ``<out_dir>/checkpoint_epoch_<epoch>.pth`` (published layout, see the module doc) atomically."""
    path = published_pth_path(out_dir, epoch)
    payload = {
        "epoch": int(epoch),
        "model_state_dict": _to_cpu(dict(model.state_dict())),
        "optimizer_state_dict": _to_cpu(optimizer.state_dict()) if optimizer is not None else None,
        "scaler": _to_cpu(scaler.state_dict()) if scaler is not None else {},
        "loss": float(loss) if loss is not None else None,
        "args": _plain(dict(args or {})),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # through a file object, so the zip's inner folder is torch's fixed "archive" (given a path, torch names
        # it after the file, here the random temporary name: two identical runs would differ in bytes)
        torch.save(payload, fh)
    return path


def save_checkpoint(
    out_dir: str | os.PathLike,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write ``<out_dir>/checkpoint_epoch_<epoch>/`` atomically and point ``<out_dir>/last`` at it."""
    out_dir = Path(out_dir)
    final = checkpoint_dir(out_dir, epoch)
    tmp = out_dir / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        meta = {"epoch": str(epoch), "format": "langvggt4d-decoder"}
        save_safetensors_atomic(dict(model.state_dict()), tmp / "model.safetensors", metadata=meta)
        info = dict(state)
        info["epoch"] = epoch
        if optimizer is not None:
            tensors, skeleton = flatten_optimizer_state(optimizer.state_dict())
            save_safetensors_atomic(tensors, tmp / "optim.safetensors")
            info["optimizer"] = skeleton
        if scaler is not None:
            info["scaler"] = scaler.state_dict()
        save_json_atomic(info, tmp / "state.json")
        old = None
        if final.exists():
            old = out_dir / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    with atomic_path(out_dir / LAST) as p:
        p.write_text(final.name + "\n")
    return final
