"""Checkpoints without pickle: ``<out>/checkpoint_epoch_<N>/`` + a ``<out>/last`` pointer.

A checkpoint folder holds

- ``model.safetensors``: the decoder's state dict;
- ``optim.safetensors``: every tensor of the optimizer state, keyed ``state.<param id>.<name>``;
- ``state.json``: decoder config, epoch, global step, run arguments, the optimizer skeleton
  (param groups and non-tensor state), the AMP grad-scaler state, and free-form extras.

The folder is written under a temporary name and renamed into place, and ``last`` (a one-line text
file naming the folder) is replaced atomically afterwards, so an interrupted save never leaves a
half-written checkpoint behind ``last``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from utils.io import atomic_path, save_json_atomic, save_safetensors_atomic

LAST = "last"


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


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], skeleton: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {int(pid): dict(plain) for pid, plain in skeleton["state"].items()}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    groups = []
    for g in skeleton["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


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


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder whose ``last`` file names one -> the checkpoint folder."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    last = path / LAST
    if last.is_file():
        target = path / last.read_text().strip()
        if (target / "state.json").is_file():
            return target
        raise FileNotFoundError(f"{last} points at {target}, which holds no state.json; pass a checkpoint folder")
    raise FileNotFoundError(
        f"no checkpoint at {path}: expected a checkpoint_epoch_<N>/ folder (with state.json) or a run folder with a "
        f"'{LAST}' file"
    )


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None, dict[str, Any]]:
    """-> (model state dict, optimizer state dict or None, state.json contents). ``path`` as in :func:`resolve_checkpoint`."""
    ckpt = resolve_checkpoint(path)
    info = json.loads((ckpt / "state.json").read_text())
    model_sd = load_file(str(ckpt / "model.safetensors"))
    optim_sd = None
    if "optimizer" in info:
        tensors = load_file(str(ckpt / "optim.safetensors")) if (ckpt / "optim.safetensors").is_file() else {}
        optim_sd = unflatten_optimizer_state(tensors, info["optimizer"])
    info["path"] = str(ckpt)
    return model_sd, optim_sd, info


def load_decoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build a :class:`SemanticBridgingDecoder` from a checkpoint folder (or run folder) for inference."""
    from model.decoder import DecoderConfig, SemanticBridgingDecoder

    model_sd, _, info = load_checkpoint(path)
    model = SemanticBridgingDecoder(DecoderConfig.from_dict(info["decoder_config"]))
    model.load_state_dict(model_sd, strict=True)
    return model.to(device).eval()
