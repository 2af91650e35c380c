"""Finding and reading StreamVGGT weights: a local ``.pth``/``.safetensors`` file, or the Hugging Face Hub.

Never unpickles: ``.pth`` files are read with ``torch.load(..., weights_only=True)``. Loading is strict, and a
mismatch is reported in one message listing missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from utils.cli import UserError

logger = logging.getLogger(__name__)

DEFAULT_REPO_ID = "lch01/StreamVGGT"
DEFAULT_FILENAME = "checkpoints.pth"
DEFAULT_LOCAL_PATH = Path("ckpt/streamvggt/checkpoints.pth")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class WeightsNotFoundError(UserError, FileNotFoundError):
    """The StreamVGGT weights could not be found locally nor downloaded."""


def weights_not_found_message(reason: str, repo_id: str = DEFAULT_REPO_ID, filename: str = DEFAULT_FILENAME) -> str:
    """The one-sentence instruction given whenever the weights are missing."""
    return (f"StreamVGGT weights not found ({reason}): download {filename} from https://huggingface.co/{repo_id} "
            f"and put it at {DEFAULT_LOCAL_PATH} (or pass its path); without weights, --backbone tiny runs the "
            "pipeline on a seeded random tiny backbone")


def _looks_like_repo_id(source: str) -> bool:
    return bool(_REPO_ID_RE.match(source)) and not source.endswith(WEIGHT_SUFFIXES) and not source.startswith(".")


def resolve_checkpoint(source: str | Path | None = None, filename: str = DEFAULT_FILENAME) -> Path:
    """Path of the weights file for ``source``.

    ``source`` may be a weights file, a folder holding ``checkpoints.pth`` or ``model.safetensors``, a Hugging
    Face repo id (downloaded with ``huggingface_hub.hf_hub_download`` when online), or None (``ckpt/streamvggt/
    checkpoints.pth`` if present, else the Hub repo ``lch01/StreamVGGT``). Raises :class:`WeightsNotFoundError`.
    """
    if source is None:
        if DEFAULT_LOCAL_PATH.is_file():
            return DEFAULT_LOCAL_PATH
        source = DEFAULT_REPO_ID
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in (filename, "model.safetensors", "checkpoints.pth"):
            if (path / name).is_file():
                return path / name
        raise WeightsNotFoundError(weights_not_found_message(f"folder {path} has no {filename} or model.safetensors"))
    text = str(source)
    if not _looks_like_repo_id(text):
        raise WeightsNotFoundError(weights_not_found_message(f"{path} does not exist"))
    from model.hub import hub_reachable

    if not hub_reachable():
        raise WeightsNotFoundError(weights_not_found_message(
            f"no local file {text!r} and the Hugging Face Hub cannot be reached", repo_id=text, filename=filename))
    try:
        from huggingface_hub import hf_hub_download

        logger.info("downloading %s from the Hugging Face Hub repo %s", filename, text)
        return Path(hf_hub_download(repo_id=text, filename=filename))
    except Exception as exc:  # offline, no such repo/file, network error: all end in the same instruction
        raise WeightsNotFoundError(weights_not_found_message(
            f"no local file {text!r} and the Hub download of {text}/{filename} failed: {type(exc).__name__}",
            repo_id=text, filename=filename)) from exc


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` state dict from ``.safetensors`` or ``.pth`` (``weights_only=True``).

    ``{"model": state_dict}`` training snapshots and ``module.`` (DDP) prefixes are accepted.
    """
    from model.safe_load import read_weights

    path = Path(path)
    if path.suffix == ".safetensors":
        sd = read_weights(path)
    else:
        obj = read_weights(path)
        if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
            obj = obj["model"]
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
        sd = obj
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: entries {bad[:5]} are not tensors; expected a plain state dict")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def check_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "state dict") -> None:
    """Raise one clear ``RuntimeError`` if keys or shapes of ``state_dict`` differ from ``module``'s."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:3]})")
        raise RuntimeError(f"{source} does not match the model ({'; '.join(parts)}); use the official "
                           f"{DEFAULT_REPO_ID} {DEFAULT_FILENAME} with the default config, or pass the config the "
                           "weights were trained with")


def load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "state dict",
                assign: bool = False) -> None:
    """Strictly load ``state_dict`` into ``module`` (clear error on any mismatch)."""
    check_state_dict(module, state_dict, source)
    module.load_state_dict(state_dict, strict=True, assign=assign)
