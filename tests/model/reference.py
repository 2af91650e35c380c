"""The official tiny StreamVGGT reference and the checkpoint key table (both in shared/fixtures), read in one place.

``streamvggt_tiny_reference.safetensors`` holds the tiny model's weights under ``weights.<module>.<key>`` and its
inputs/outputs (``inputs.images``, ``batched.tokens.<i>``, ``streaming.pose_enc``, ...);
``streamvggt_keys.tsv`` lists every key of the official full-size checkpoint as ``key<TAB>shape (AxB)<TAB>dtype``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REFERENCE = "streamvggt_tiny_reference.safetensors"
REFERENCE_META = "streamvggt_tiny_reference.json"
KEYS_TSV = "streamvggt_keys.tsv"


def _fixture_file(fixtures_dir: Path, name: str) -> Path:
    path = fixtures_dir / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def load_reference(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of the tiny reference (skips the test when the file is absent)."""
    from safetensors.torch import load_file

    return load_file(str(_fixture_file(fixtures_dir, REFERENCE)))


def load_reference_meta(fixtures_dir: Path) -> dict:
    """The reference's JSON description (its tiny config under ``config``)."""
    return json.loads(_fixture_file(fixtures_dir, REFERENCE_META).read_text())


def module_weights(ref: dict[str, torch.Tensor], module: str) -> dict[str, torch.Tensor]:
    """The state dict of one child (``aggregator``, ``camera_head``, ``depth_head``, ...) from the reference."""
    prefix = f"weights.{module}."
    return {k[len(prefix):]: v for k, v in ref.items() if k.startswith(prefix)}


def load_module_weights(module: torch.nn.Module, ref: dict[str, torch.Tensor], name: str) -> torch.nn.Module:
    """Load the reference weights of child ``name`` into ``module`` (strict) and return ``module``."""
    module.load_state_dict(module_weights(ref, name), strict=True)
    return module


def checkpoint_shapes(fixtures_dir: Path, prefix: str | None = None) -> dict[str, tuple[int, ...]]:
    """Rows of the official key table: {key: shape}; with ``prefix`` only the keys under ``prefix.``, without it."""
    out = {}
    for line in _fixture_file(fixtures_dir, KEYS_TSV).read_text().splitlines()[1:]:
        key, shape, _ = line.split("\t")
        if prefix is not None:
            if not key.startswith(prefix + "."):
                continue
            key = key[len(prefix) + 1:]
        out[key] = tuple(int(v) for v in shape.split("x")) if shape else ()
    return out


# ------------------------------------------------------------------------------------------ PAGE-4D (VGGT family)
PAGE4D_REFERENCE = "page4d_tiny_reference.safetensors"
PAGE4D_REFERENCE_META = "page4d_tiny_reference.json"
PAGE4D_KEYS_TSV = "page4d_keys.tsv"


def load_page4d_reference(fixtures_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of the PAGE-4D tiny reference (weights, inputs, official outputs per variant, preprocessing)."""
    from safetensors.torch import load_file

    return load_file(str(_fixture_file(fixtures_dir, PAGE4D_REFERENCE)))


def page4d_tiny_config(fixtures_dir: Path, variant: str) -> dict:
    """The fixture's tiny model as a ``load_backbone`` config (official argument names) for ``variant``
    (``mask`` or ``nomask``), read from the reference's JSON."""
    meta = json.loads(_fixture_file(fixtures_dir, PAGE4D_REFERENCE_META).read_text())
    c = meta["config"]
    hold = meta["config"][f"variant_{variant}"]
    dpt = {"features": c["dpt_features"], "out_channels": c["dpt_out_channels"],
           "intermediate_layer_idx": c["dpt_intermediate_layer_idx"]}
    return {"img_size": c["width"], "patch_size": c["patch_size"], "embed_dim": c["embed_dim"], "depth": c["depth"],
            "num_heads": c["num_heads"], "patch_embed": c["patch_embed"], "enable_track": False,
            "mask_hold_start": hold["mask_hold_start"], "mask_hold_end": hold["mask_hold_end"],
            "camera_head": {"trunk_depth": c["camera_trunk_depth"], "num_heads": c["camera_num_heads"],
                            "num_iterations": c["camera_num_iterations"]},
            "depth_head": dict(dpt), "point_head": dict(dpt)}


def page4d_state_dict(ref: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tiny reference's weights under their full official keys (``aggregator.…``, ``camera_head.…``)."""
    return {k[len("weights."):]: v for k, v in ref.items() if k.startswith("weights.")}


def page4d_key_shapes(fixtures_dir: Path) -> dict[str, tuple[int, ...]]:
    """Every key of the full-size PAGE-4D state dict with its shape (``page4d_keys.tsv``)."""
    out = {}
    for line in _fixture_file(fixtures_dir, PAGE4D_KEYS_TSV).read_text().splitlines()[1:]:
        key, shape, _ = line.split("\t")
        out[key] = tuple(int(v) for v in shape.split("x")) if shape else ()
    return out
