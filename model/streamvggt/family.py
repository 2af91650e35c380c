"""Registers the StreamVGGT family (``--backbone streamvggt``, ``tiny[:seed]``, a path or a Hub id)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.registry import BackboneFamily, register
from model.streamvggt.config import StreamVGGTConfig
from model.streamvggt.loading import DEFAULT_LOCAL_PATH, DEFAULT_REPO_ID, read_state_dict, resolve_checkpoint


def _config(config: dict[str, Any] | None) -> StreamVGGTConfig:
    return StreamVGGTConfig.from_dict(config) if config else StreamVGGTConfig()


def _build(config: dict[str, Any] | None):
    from model.streamvggt.streamvggt import StreamVGGT

    return StreamVGGT(_config(config))


def _tiny(seed: int):
    from model.streamvggt.streamvggt import StreamVGGT

    return StreamVGGT.tiny(seed=seed)


def _load(source: str | None, config: dict[str, Any] | None) -> tuple[Any, Path]:
    from model.streamvggt.streamvggt import StreamVGGT

    path = resolve_checkpoint(source)
    return StreamVGGT.from_pretrained(path, config=_config(config), device="cpu"), path


STREAMVGGT = register(BackboneFamily(
    name="streamvggt", summary="StreamVGGT: causal, streams frame by frame with a key/value cache (bounded memory)",
    streaming=True, build=_build, tiny=_tiny, resolve=resolve_checkpoint, read=read_state_dict,
    load=_load,
    default_source=f"{DEFAULT_LOCAL_PATH}, else the Hub repo {DEFAULT_REPO_ID}",
    facts={"token_dim": 2048, "patch_start_idx": 5, "dpt_layers": (4, 11, 17, 23),
           "weights": f"https://huggingface.co/{DEFAULT_REPO_ID} checkpoints.pth"}))
