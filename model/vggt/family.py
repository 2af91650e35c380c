"""Registers the VGGT family: ``vggt`` (VGGT-1B), ``page4d`` (mask off, the official default) and
``page4d-mask`` (inference-time masking, ``mask_hold_start = mask_hold_end = 1``).

Weights: ``vggt`` reads ``ckpt/vggt/model.safetensors`` else the Hub repo ``facebook/VGGT-1B``; ``page4d`` reads
``ckpt/page4d/checkpoint_nomask.pt`` and ``page4d-mask`` ``ckpt/page4d/checkpoint_mask.pt`` (from the Hugging Face
*dataset* repo ``zhouk777/PAGE4D``), or any path / repo id given after the colon.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from model.registry import BackboneFamily, register
from model.vggt.config import VGGTConfig
from utils.cli import UserError

logger = logging.getLogger(__name__)

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")

#: the tiny configuration of the tests and the weight-free demo: the PAGE-4D fixture's (full 24-block schedule,
#: width 32, head width 8), with a small track head
TINY_CONFIG: dict[str, Any] = {
    "img_size": 70, "embed_dim": 32, "num_heads": 4, "patch_embed": "conv",
    "camera_head": {"trunk_depth": 2, "num_heads": 4},
    "depth_head": {"features": 16, "out_channels": [8, 16, 32, 32]},
    "point_head": {"features": 16, "out_channels": [8, 16, 32, 32]},
    "track_head": {"features": 16, "hidden_size": 32, "corr_levels": 2, "corr_radius": 2,
                   "out_channels": [8, 16, 32, 32]},
}


def _resolve(source: str | None, default_local: Path, repo_id: str, filename: str, repo_type: str | None,
             what: str) -> Path:
    """A weights file from a path, a folder, a Hub repo id, or None (``default_local``, else ``repo_id``)."""
    fix = (f"download {filename} from https://huggingface.co/{'datasets/' if repo_type else ''}{repo_id} and put "
           f"it at {default_local} (or pass its path)")
    if source is None:
        if default_local.is_file():
            return default_local
        source = repo_id
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in (filename, "model.safetensors", "model.pt"):
            if (path / name).is_file():
                return path / name
        raise UserError(f"{what} weights not found: the folder has no {filename}", path, fix)
    if not _REPO_ID_RE.match(str(source)) or str(source).endswith(_SUFFIXES):
        raise UserError(f"{what} weights not found", path, fix)
    from model.hub import hub_reachable

    if not hub_reachable():
        raise UserError(f"{what} weights not found locally and the Hugging Face Hub cannot be reached", source, fix)
    from huggingface_hub import hf_hub_download

    names = [filename] + [n for n in ("model.safetensors", "model.pt") if n != filename and repo_type is None]
    failure: Exception | None = None
    for name in names:  # facebook/VGGT-1B publishes model.safetensors (from_pretrained) and model.pt (flat)
        try:
            logger.info("downloading %s from the Hugging Face Hub repo %s", name, source)
            return Path(hf_hub_download(repo_id=str(source), filename=name, repo_type=repo_type))
        except Exception as exc:  # offline, no such repo or file: try the next name, then one instruction
            failure = exc
    raise UserError(f"{what} weights: the Hub download of {source}/{' or '.join(names)} failed "
                    f"({type(failure).__name__})", source, fix) from failure


def _read(path: Path) -> dict[str, torch.Tensor]:
    from model.vggt.loading import read_state_dict

    return read_state_dict(path)


def _make_family(name: str, spatial_mask: bool, overrides: dict[str, Any], summary: str, default_local: Path,
                 repo_id: str, filename: str, repo_type: str | None, facts: dict[str, Any]) -> BackboneFamily:
    def config_of(config: dict[str, Any] | None) -> VGGTConfig:
        return VGGTConfig.from_dict({**overrides, **(config or {})})

    def build(config: dict[str, Any] | None = None):
        from model.vggt.vggt import VGGT

        return VGGT(config_of(config), spatial_mask=spatial_mask)

    def tiny(seed: int = 0):
        from model.streamvggt.heads.camera_head import nudge_field_of_view

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build(TINY_CONFIG)
        nudge_field_of_view(model.camera_head)
        return model.eval()

    def resolve(source: str | None) -> Path:
        return _resolve(source, default_local, repo_id, filename, repo_type, name)

    def load(source: str | None, config: dict[str, Any] | None = None):
        from model.vggt.loading import load_weights, read_state_dict

        path = resolve(source)
        state_dict = read_state_dict(path)
        with torch.device("meta"):
            model = build(config)
        load_weights(model, state_dict, path, assign=True)
        logger.info("loaded %s weights from %s", name, path)
        return model.eval(), path

    return register(BackboneFamily(name=name, summary=summary, streaming=False, build=build, tiny=tiny,
                                   resolve=resolve, read=_read, load=load,
                                   default_source=f"{default_local}, else the Hub repo {repo_id}", facts=facts))


_COMMON = {"token_dim": 2048, "patch_start_idx": 5, "dpt_layers": (4, 11, 17, 23)}
VGGT = _make_family(
    "vggt", False, {}, "VGGT-1B: global attention over every frame of a window (offline; memory grows with the "
    "square of the window)", Path("ckpt/vggt/model.safetensors"), "facebook/VGGT-1B", "model.safetensors", None,
    {**_COMMON, "paper": "VGGT (CVPR 2025)", "weights": "https://huggingface.co/facebook/VGGT-1B"})
PAGE4D = _make_family(
    "page4d", True, {}, "PAGE-4D, mask off (its official default = VGGT's structure on PAGE-4D's fine-tuned "
    "weights)", Path("ckpt/page4d/checkpoint_nomask.pt"), "zhouk777/PAGE4D", "checkpoint_nomask.pt", "dataset",
    {**_COMMON, "paper": "PAGE-4D", "weights": "https://huggingface.co/datasets/zhouk777/PAGE4D"})
PAGE4D_MASK = _make_family(
    "page4d-mask", True, {"mask_hold_start": 1, "mask_hold_end": 1}, "PAGE-4D with inference-time masking: "
    "camera/register tokens look away from moving regions (global blocks 10-19)",
    Path("ckpt/page4d/checkpoint_mask.pt"), "zhouk777/PAGE4D", "checkpoint_mask.pt", "dataset",
    {**_COMMON, "paper": "PAGE-4D", "weights": "https://huggingface.co/datasets/zhouk777/PAGE4D"})
