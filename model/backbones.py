"""One backbone specification for every command, parsed in one place.

A specification is one of

- ``tiny`` or ``tiny:<seed>``: the seeded random tiny StreamVGGT (tests and the weight-free demo); identified as
  ``tiny-random-seed<seed>``;
- ``streamvggt``: the official weights from ``ckpt/streamvggt/checkpoints.pth``, else the Hub repo
  ``lch01/StreamVGGT``;
- a path to a ``.pth`` / ``.safetensors`` file or folder, or a Hugging Face repo id: those weights.

Weights are identified by ``streamvggt-sha256-<first 16 hex digits of the file's SHA-256>``, the identity the token
cache records, so a cache, a decoder and a ``--backbone`` can be compared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from utils.cli import UserError

logger = logging.getLogger(__name__)

OFFICIAL = "streamvggt"


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed specification: ``kind`` is ``tiny`` or ``checkpoint``; ``source`` the path / repo id (None = the
    default official weights); ``seed`` for ``tiny``."""

    kind: str
    source: str | None = None
    seed: int = 0

    @classmethod
    def parse(cls, spec: str | None) -> BackboneSpec:
        text = (spec or OFFICIAL).strip()
        if text == "tiny" or text.startswith("tiny:"):
            seed_text = text.partition(":")[2] or "0"
            try:
                return cls("tiny", seed=int(seed_text))
            except ValueError:
                raise UserError(f"backbone 'tiny:{seed_text}' has no integer seed", None,
                                "write tiny or tiny:<integer seed>") from None
        if text == OFFICIAL:
            return cls("checkpoint", None)
        return cls("checkpoint", text)

    @property
    def is_tiny(self) -> bool:
        return self.kind == "tiny"


def tiny_backbone_id(seed: int) -> str:
    return f"tiny-random-seed{int(seed)}"


def checkpoint_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint file, cached in ``<path>.sha256.json`` (keyed by size and mtime)."""
    path = Path(path)
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    side = path.with_name(path.name + ".sha256.json")
    try:
        cached = json.loads(side.read_text())
        if cached.get("size") == stamp["size"] and cached.get("mtime_ns") == stamp["mtime_ns"]:
            return str(cached["sha256"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    logger.info("hashing %s (%.1f GB) once; the digest is cached in %s", path, st.st_size / 1e9, side)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        from utils.io import save_json_atomic

        save_json_atomic({**stamp, "sha256": digest}, side)
    except OSError as e:
        logger.warning("cannot cache the checkpoint hash beside it (%s); it will be recomputed next run", e)
    return digest


def load_backbone(spec: str | BackboneSpec | None, device: torch.device | str = "cpu"
                  ) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """Build the StreamVGGT a specification names, in eval mode on ``device``.

    Returns (model, identity, info); ``identity`` is what token caches record (``tiny-random-seed0``,
    ``streamvggt-sha256-...``). A missing checkpoint is an error, never a fallback to random weights.
    """
    from model.streamvggt.streamvggt import StreamVGGT

    spec = spec if isinstance(spec, BackboneSpec) else BackboneSpec.parse(spec)
    if spec.is_tiny:
        bid = tiny_backbone_id(spec.seed)
        logger.warning("backbone: TINY RANDOM WEIGHTS (seed %d): for testing the pipeline only; recorded as %r",
                       spec.seed, bid)
        model = StreamVGGT.tiny(seed=spec.seed)
        info: dict[str, Any] = {"id": bid, "kind": "tiny-random", "seed": spec.seed}
    else:
        from model.streamvggt.loading import resolve_checkpoint

        path = resolve_checkpoint(spec.source)
        digest = checkpoint_sha256(path)
        bid = f"streamvggt-sha256-{digest[:16]}"
        model = StreamVGGT.from_pretrained(path, device="cpu")
        info = {"id": bid, "kind": "checkpoint", "file": path.name, "sha256": digest}
        logger.info("backbone: %s (%s)", path, bid)
    info["config"] = model.config.to_dict()
    return model.to(device).eval().requires_grad_(False), bid, info
