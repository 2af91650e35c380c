"""Reading decoders: one loader that returns the right decoder by what the file holds.

Accepted, by path:

- our checkpoint folder ``checkpoint_epoch_<N>/`` (``model.safetensors`` + ``state.json``), a training run folder
  (its ``last`` file names the folder), or that folder's ``model.safetensors``; ``state.json`` records the
  decoder config, whose ``kind`` says which class (ours by default, ``published`` for the published head);
- a single ``.safetensors`` file with the config in its ``langvggt4d`` metadata key (:func:`save_decoder_file`),
  or with the published head's key names (its widths are read from the tensor shapes);
- a Hugging Face Hub style folder (``config.json`` + ``model.safetensors``, :func:`save_pretrained`), or a Hub
  repo id holding one (:func:`from_pretrained`, fetched with ``huggingface_hub``), the contract of
  ``huggingface_hub.PyTorchModelHubMixin``, so a trained decoder is shared on the Hub as VGGT's weights are;
- a published 4DLangVGGT ``.pth`` (``{'epoch', 'model_state_dict', 'optimizer_state_dict', 'scaler', 'loss',
  'args'}``): read with ``weights_only`` and exactly one extra class allowed (``argparse.Namespace``, the
  ``args``); ``model_state_dict`` is loaded strictly. Any other pickled object is refused, never executed.

Saving a training checkpoint lives in ``training.checkpoint``; this module only reads, so inference never
imports training code.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from model.decoder import DecoderConfig, SemanticBridgingDecoder
from model.published_decoder import KIND as PUBLISHED
from model.published_decoder import PublishedDecoderConfig, PublishedLanguageHead
from model.safe_load import read_safetensors, torch_load_safe
from utils.cli import UserError

LAST = "last"
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
#: the Hub folder's config (``PyTorchModelHubMixin``'s name): ``{"decoder_config": ..., "token_info": ...}``
HUB_CONFIG_FILE = "config.json"
OPTIM_FILE = "optim.safetensors"
META_KEY = "langvggt4d"
PTH_SUFFIXES = (".pth", ".pt", ".bin")

AnyDecoderConfig = DecoderConfig | PublishedDecoderConfig


class DecoderLoadError(UserError):
    """A decoder path that cannot be loaded (missing, of an unknown kind, or not matching its config)."""


def decoder_config_from_dict(d: dict[str, Any]) -> AnyDecoderConfig:
    """A config dict (as stored in ``state.json``) -> the config of the right decoder class."""
    if d.get("kind") == PUBLISHED:
        return PublishedDecoderConfig.from_dict(d)
    return DecoderConfig.from_dict({k: v for k, v in d.items() if k != "kind"})


def build_decoder(config: AnyDecoderConfig | dict[str, Any]) -> nn.Module:
    """A freshly initialised decoder for ``config`` (ours or the published head)."""
    if isinstance(config, dict):
        config = decoder_config_from_dict(config)
    if isinstance(config, PublishedDecoderConfig):
        return PublishedLanguageHead(config)
    return SemanticBridgingDecoder(config)


def decoder_kind(decoder: nn.Module) -> str:
    """``published`` or ``ours``."""
    return PUBLISHED if isinstance(decoder, PublishedLanguageHead) else "ours"


def resolve_checkpoint_folder(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run folder whose ``last`` file names one -> the checkpoint folder."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    last = path / LAST
    if last.is_file():
        target = path / last.read_text().strip()
        if (target / STATE_FILE).is_file():
            return target
        raise DecoderLoadError(f"the run's '{LAST}' file points at {target.name}, which holds no {STATE_FILE}", last,
                               "pass a checkpoint_epoch_<N>/ folder instead")
    raise DecoderLoadError(
        "no decoder checkpoint here", path,
        f"pass a checkpoint_epoch_<N>/ folder (with {STATE_FILE}), a run folder with a '{LAST}' file, a decoder "
        ".safetensors file or a published 4DLangVGGT .pth")


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], skeleton: dict[str, Any]) -> dict:
    """Inverse of ``training.checkpoint.flatten_optimizer_state``: (tensors, JSON skeleton) -> optimizer state."""
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


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None, dict[str, Any]]:
    """Our checkpoint folder -> (model state dict, optimizer state dict or None, ``state.json`` contents + path)."""
    ckpt = resolve_checkpoint_folder(path)
    try:
        info = json.loads((ckpt / STATE_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DecoderLoadError(f"unreadable checkpoint state ({e})", ckpt / STATE_FILE,
                               "the checkpoint is damaged: use another epoch's folder") from None
    model_sd, _ = read_safetensors(ckpt / MODEL_FILE)
    optim_sd = None
    if "optimizer" in info:
        tensors = read_safetensors(ckpt / OPTIM_FILE)[0] if (ckpt / OPTIM_FILE).is_file() else {}
        optim_sd = unflatten_optimizer_state(tensors, info["optimizer"])
    info["path"] = str(ckpt)
    return model_sd, optim_sd, info


def read_published_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A published 4DLangVGGT ``.pth`` -> (``model_state_dict``, info: epoch, args as a dict, loss, and the
    optimizer / scaler states when present). Only ``argparse.Namespace`` is allowed beyond plain data."""
    path = Path(path)
    obj = torch_load_safe(path, allowed=(argparse.Namespace,))
    if not isinstance(obj, dict):
        raise DecoderLoadError(f"expected a dict with 'model_state_dict', found a {type(obj).__name__}", path,
                               "pass the published checkpoint_epoch_<N>.pth")
    sd = obj.get("model_state_dict", obj if all(torch.is_tensor(v) for v in obj.values()) else None)
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise DecoderLoadError("no 'model_state_dict' of tensors in this file", path,
                               "pass the published checkpoint_epoch_<N>.pth (or a plain state dict)")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    args = obj.get("args")
    info: dict[str, Any] = {"path": str(path), "format": "published-pth", "epoch": obj.get("epoch"),
                            "args": vars(args) if isinstance(args, argparse.Namespace) else args,
                            "loss": float(obj["loss"]) if isinstance(obj.get("loss"), (int, float, torch.Tensor))
                            and torch.as_tensor(obj["loss"]).numel() == 1 else None}
    for key in ("optimizer_state_dict", "scaler"):
        if key in obj:
            info[key] = obj[key]
    return dict(sd), info


def save_decoder_file(model: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write one self-describing ``.safetensors`` file: the state dict + the config in one canonical
    (sorted JSON) metadata key, so the bytes are the same on every run."""
    from utils.io import save_safetensors_atomic

    meta = {"config": cast(Any, model).config.to_dict(), **(extra or {})}
    save_safetensors_atomic(dict(model.state_dict()), path,
                            metadata={META_KEY: json.dumps(meta, sort_keys=True, separators=(",", ":"))})


def _config_of_safetensors(path: Path, sd: dict[str, torch.Tensor], meta: dict[str, str]) -> AnyDecoderConfig:
    if META_KEY in meta:
        try:
            return decoder_config_from_dict(json.loads(meta[META_KEY])["config"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DecoderLoadError(f"unreadable decoder config in the file's metadata ({e})", path,
                                   "write the file again with model.decoder_io.save_decoder_file") from None
    if "lang_decoder_small.final_conv.weight" in sd:
        return PublishedDecoderConfig.from_state_dict(sd)
    raise DecoderLoadError("this .safetensors holds no decoder config and is not a published head", path,
                           "pass the checkpoint folder (with state.json) it came from")


def read_decoder(path: str | os.PathLike) -> tuple[AnyDecoderConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Any accepted decoder path -> (config, state dict, info with ``path`` and ``format``)."""
    path = Path(path)
    if not path.exists():
        raise DecoderLoadError("decoder checkpoint not found", path,
                               "pass a training run folder, a checkpoint_epoch_<N>/ folder, a .safetensors file "
                               "or the published checkpoint_epoch_100.pth")
    if path.is_file() and path.name == MODEL_FILE and (path.parent / STATE_FILE).is_file():
        path = path.parent
    if path.is_dir() and (path / HUB_CONFIG_FILE).is_file() and not (path / STATE_FILE).is_file():
        return _read_hub_folder(path)
    if path.is_dir():
        sd, _, info = load_checkpoint(path)
        if "decoder_config" not in info:
            raise DecoderLoadError(f"{STATE_FILE} has no decoder_config", Path(info["path"]) / STATE_FILE,
                                   "the checkpoint was not written by train.py; retrain or pass another one")
        info["format"] = "folder"
        return decoder_config_from_dict(info["decoder_config"]), sd, info
    if path.suffix == ".safetensors":
        sd, meta = read_safetensors(path)
        return _config_of_safetensors(path, sd, meta), sd, {"path": str(path), "format": "safetensors",
                                                            "layers_known": META_KEY in meta}
    if path.suffix in PTH_SUFFIXES:
        sd, info = read_published_checkpoint(path)
        try:
            cfg = PublishedDecoderConfig.from_state_dict(sd)
        except ValueError as e:
            raise DecoderLoadError(str(e), path, "pass the published 4DLangVGGT checkpoint_epoch_<N>.pth") from None
        info["layers_known"] = False
        return cfg, sd, info
    raise DecoderLoadError(f"unknown decoder file type '{path.suffix}'", path,
                           "pass a checkpoint folder, a .safetensors file or a published .pth")


def load_state_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str | os.PathLike) -> None:
    """``load_state_dict(strict=True)`` with one clear error listing what differs."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[:2]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})" if unexpected else "",
                 f"{len(shapes)} of another shape (e.g. {shapes[:2]})" if shapes else ""]
        raise DecoderLoadError("the weights do not match the decoder: " + "; ".join(p for p in parts if p), source,
                               "pass the checkpoint together with the config it was trained with")
    model.load_state_dict(sd, strict=True)


def load_decoder(path: str | os.PathLike, device: str | torch.device = "cpu",
                 layers: tuple[int, ...] | None = None) -> nn.Module:
    """Build and strictly load the decoder a path holds, in eval mode on ``device``.

    ``layers``: the backbone blocks the decoder reads, for files that do not record them (a published ``.pth``
    always reads the backbone's DPT layers: 4, 11, 17, 23 for StreamVGGT, 0..3 for the tiny test backbone).
    """
    cfg, sd, info = read_decoder(path)
    if layers is not None and not info.get("layers_known", True):
        cfg.layers = tuple(int(i) for i in layers)
    model = build_decoder(cfg)
    load_state_strict(model, sd, info["path"])
    cast(Any, model).source_info = {k: v for k, v in info.items() if k in ("path", "format", "epoch", "token_info")}
    return model.to(device).eval()


def save_pretrained(model: nn.Module, folder: str | os.PathLike) -> Path:
    """Write ``model`` (ours or the published head) as a Hub folder: ``model.safetensors`` (the state dict) and
    ``config.json`` (``decoder_config`` with its ``kind``, and the ``token_info`` the decoder was trained on when
    known, so inference still refuses tokens of another backbone). Upload the folder with
    ``huggingface_hub.upload_folder``; :func:`from_pretrained` (or ``--decoder``) reads it back. Byte-deterministic."""
    from utils.io import save_json_atomic, save_safetensors_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {"decoder_config": {**cast(Any, model).config.to_dict(), "kind": decoder_kind(model)}}
    token_info = getattr(model, "source_info", {}).get("token_info")
    if token_info:
        config["token_info"] = token_info
    save_safetensors_atomic(dict(model.state_dict()), folder / MODEL_FILE)
    save_json_atomic(config, folder / HUB_CONFIG_FILE)
    return folder


def _read_hub_folder(folder: Path) -> tuple[AnyDecoderConfig, dict[str, torch.Tensor], dict[str, Any]]:
    from utils.io import read_json

    config = read_json(folder / HUB_CONFIG_FILE)
    if not isinstance(config, dict) or not isinstance(config.get("decoder_config"), dict):
        raise DecoderLoadError(f"{HUB_CONFIG_FILE} holds no decoder_config", folder / HUB_CONFIG_FILE,
                               "write the folder with model.decoder_io.save_pretrained")
    try:
        cfg = decoder_config_from_dict(config["decoder_config"])
    except (TypeError, ValueError) as e:
        raise DecoderLoadError(f"unreadable decoder config ({e})", folder / HUB_CONFIG_FILE,
                               "write the folder with model.decoder_io.save_pretrained") from None
    sd, _ = read_safetensors(folder / MODEL_FILE)
    info: dict[str, Any] = {"path": str(folder), "format": "hub"}
    if config.get("token_info"):
        info["token_info"] = config["token_info"]
    return cfg, sd, info


def from_pretrained(name: str | os.PathLike, device: str | torch.device = "cpu",
                    layers: tuple[int, ...] | None = None, revision: str | None = None) -> nn.Module:
    """A decoder from any path :func:`load_decoder` reads, or a Hugging Face Hub repo id (``user/name``) holding a
    :func:`save_pretrained` folder (downloaded once into the Hub cache; ``HF_HUB_OFFLINE=1`` reads the cache)."""
    path = Path(name)
    repo_like = isinstance(name, str) and name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if repo_like and not path.exists() and not path.parent.exists():  # not a local path: a Hub repo id
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            path = Path(snapshot_download(str(name), revision=revision, allow_patterns=[HUB_CONFIG_FILE, MODEL_FILE]))
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
            raise DecoderLoadError(f"no such decoder path, and no Hugging Face Hub repo of that name could be "
                                   f"fetched ({type(e).__name__})", name,
                                   "check the path, or the repo id and the network (offline: fetch it once "
                                   "online)") from None
    return load_decoder(path, device=device, layers=layers)
