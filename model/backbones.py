"""One backbone specification for every command, parsed in one place.

A specification is ``[<family>:]<weights>``; the families come from :mod:`model.registry` (``streamvggt``,
``vggt``, ``page4d``, ``page4d-mask``):

- ``tiny`` or ``tiny:<seed>``: the seeded random tiny StreamVGGT (tests and the weight-free demo); identified as
  ``tiny-random-seed<seed>``; ``<family>:tiny[:<seed>]`` the tiny network of another family
  (``vggt-tiny-random-seed0``, ``page4d-mask-tiny-random-seed0``);
- ``streamvggt`` / ``vggt`` / ``page4d`` / ``page4d-mask``: the family's published weights from ``ckpt/`` (else
  the Hub, where published there);
- ``<family>:<file, folder or Hub repo id>`` (``vggt:facebook/VGGT-1B``, ``page4d:checkpoint_nomask.pt``);
  a bare path or repo id is StreamVGGT weights, as before.

Weights are identified by ``<family>-sha256-<first 16 hex digits of the file's SHA-256>`` (``streamvggt-sha256-…``
as before), the identity the token cache records, so a cache, a decoder and a ``--backbone`` can be compared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from utils.cli import UserError

logger = logging.getLogger(__name__)

OFFICIAL = "streamvggt"


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed specification: ``family`` (a registry name), ``kind`` ``tiny`` or ``checkpoint``, ``source`` the
    path / repo id (None = the family's default weights), ``seed`` for ``tiny``."""

    kind: str
    source: str | None = None
    seed: int = 0
    family: str = OFFICIAL

    @classmethod
    def parse(cls, spec: str | None) -> BackboneSpec:
        from model.registry import families

        text = (spec or OFFICIAL).strip()
        known = families()
        family = OFFICIAL
        name, sep, rest = text.partition(":")
        if name in known:
            family, text = name, (rest if sep else "")
        if text == "tiny" or text.startswith("tiny:"):
            seed_text = text.partition(":")[2] or "0"
            try:
                return cls("tiny", seed=int(seed_text), family=family)
            except ValueError:
                raise UserError(f"backbone '{spec}' has no integer seed", None,
                                "write tiny:<integer seed> (or <family>:tiny:<seed>)") from None
        if text in ("", OFFICIAL):
            return cls("checkpoint", None, family=family)
        return cls("checkpoint", text, family=family)

    @property
    def is_tiny(self) -> bool:
        return self.kind == "tiny"

    @property
    def text(self) -> str:
        """The specification written back (``page4d:tiny:0``, ``vggt:facebook/VGGT-1B``, ``streamvggt``)."""
        what = f"tiny:{self.seed}" if self.is_tiny else (self.source or "")
        if self.family == OFFICIAL:
            return what or OFFICIAL
        return f"{self.family}:{what}" if what else self.family


def tiny_backbone_id(seed: int, family: str = OFFICIAL) -> str:
    """``tiny-random-seed<N>`` (StreamVGGT, as before) or ``<family>-tiny-random-seed<N>``."""
    base = f"tiny-random-seed{int(seed)}"
    return base if family == OFFICIAL else f"{family}-{base}"


def _variant(family: str, model: torch.nn.Module) -> str:
    """The family label recorded in identities: ``page4d`` becomes ``page4d-mask`` when its mask is on."""
    head = getattr(getattr(model, "aggregator", None), "spatial_mask_head", None)
    if head is not None:
        return "page4d-mask" if head.alpha > 0 else "page4d"
    return family


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


def load_backbone(spec: str | BackboneSpec | None, config: dict[str, Any] | None = None,
                  device: torch.device | str = "cpu") -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """Build the backbone a specification names, in eval mode on ``device``.

    ``config``: a dict of the official constructors' argument names (VGGT / PAGE-4D: ``img_size``,
    ``embed_dim``, ``depth``, ``num_heads``, ``patch_embed``, ``enable_track``, ``mask_hold_start``, ...,
    and head sub-dicts ``camera_head``, ``depth_head``, ``point_head``; StreamVGGT: its config fields); what it
    leaves out takes the official defaults. Returns (model, identity, info); ``identity`` is what token caches
    record (``tiny-random-seed0``, ``streamvggt-sha256-...``, ``page4d-mask-sha256-...``). The model maps
    (B, S, 3, H, W) images in [0, 1] to a dict with ``tokens`` and the official output names. A missing
    checkpoint is an error, never a fallback to random weights.
    """
    from model.registry import get_family

    if isinstance(config, (str, torch.device)):  # the older call load_backbone(spec, device)
        config, device = None, config
    spec = spec if isinstance(spec, BackboneSpec) else BackboneSpec.parse(spec)
    family = get_family(spec.family)
    if spec.is_tiny:
        model = family.tiny(spec.seed) if config is None else _seeded(family, config, spec.seed)
        label = _variant(spec.family, model)
        bid = tiny_backbone_id(spec.seed, label)
        logger.warning("backbone: TINY RANDOM WEIGHTS (%s, seed %d): for testing the pipeline only; recorded as %r",
                       label, spec.seed, bid)
        info: dict[str, Any] = {"id": bid, "kind": "tiny-random", "seed": spec.seed}
    else:
        model, path = family.load(spec.source, config)
        digest = checkpoint_sha256(path)
        label = _variant(spec.family, model)
        bid = f"{label}-sha256-{digest[:16]}"
        info = {"id": bid, "kind": "checkpoint", "file": Path(path).name, "sha256": digest}
        logger.info("backbone: %s (%s)", path, bid)
    info["family"] = label
    info["streaming"] = family.streaming
    info["config"] = cast(Any, model).config.to_dict()  # every family's network has a config
    return model.to(device).eval().requires_grad_(False), bid, info


def _seeded(family: Any, config: dict[str, Any], seed: int) -> torch.nn.Module:
    """A random network of ``config`` built under ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return family.build(config).eval()


def backbone_family(identity: str) -> str:
    """The family label of a recorded backbone identity (``tiny-random-seed0`` and ``streamvggt-sha256-…`` are
    StreamVGGT; ``page4d-mask-sha256-…`` is ``page4d-mask``)."""
    if identity.startswith("tiny-random-seed"):
        return OFFICIAL
    for marker in ("-tiny-random-seed", "-sha256-"):
        if marker in identity:
            return identity.split(marker)[0]
    return identity


def backbone_help() -> str:
    """The ``--backbone`` help text of every command, listing the registered families."""
    from model.registry import families

    names = ", ".join(f"'{n}' ({f.summary.split(':')[0]}; weights: {f.default_source})"
                      for n, f in sorted(families().items()))
    return ("[<family>:]<weights>. Families: " + names + ". '<family>:<file, folder or Hub repo id>' reads those "
            "weights (e.g. vggt:facebook/VGGT-1B, page4d:ckpt/page4d/checkpoint_nomask.pt); a bare path or repo id "
            "is StreamVGGT weights; 'tiny' / 'tiny:<seed>' (or '<family>:tiny:<seed>'): a seeded RANDOM tiny model, "
            "only to run the pipeline without weights (recorded as [<family>-]tiny-random-seed<N>). Windowed "
            "families (vggt, page4d, page4d-mask) run --window frames at a time with --overlap shared frames")
