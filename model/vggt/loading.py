"""Reading published VGGT-1B and PAGE-4D weights, strictly, without executing pickles.

* VGGT-1B (``facebook/VGGT-1B``): ``model.safetensors`` (or ``model.pt``, a flat state dict), 1797 keys, the
  StreamVGGT key set.
* PAGE-4D (``.pt`` from the dataset repo ``zhouk777/PAGE4D``: ``checkpoint_nomask.pt``, ``checkpoint_mask.pt``):
  a training snapshot, a dict whose ``model`` entry is the state dict (``optimizer``, ``steps``, ... beside it),
  read with ``weights_only=True`` and :data:`SNAPSHOT_ALLOWED`; the six ``aggregator.spatial_mask_head.*`` keys
  on top of VGGT's.

Strict: an unexpected key or a shape mismatch is one error; a head whose keys are all absent (a released file may
lack ``track_head.*``) is named in one warning line and removed from the network (never left random); any other
missing key is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from utils.cli import UserError

logger = logging.getLogger(__name__)

#: heads a published file may leave out (the network is usable without them)
OPTIONAL_HEADS = ("track_head", "point_head", "depth_head", "camera_head")


def _snapshot_allowed() -> tuple[type, ...]:
    """Classes a training snapshot's side entries may pickle (numpy scalars in optimizer/scaler state)."""
    import numpy as np

    allowed: list = [np.dtype]
    try:
        from numpy.core.multiarray import scalar
    except ImportError:  # numpy >= 2 moved it
        from numpy._core.multiarray import scalar
    allowed.append(scalar)
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32")]
    return tuple(allowed)


SNAPSHOT_ALLOWED = _snapshot_allowed()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from ``.safetensors`` or a ``.pt``/``.pth`` (flat, or a snapshot's ``model``)."""
    from model.safe_load import read_weights

    path = Path(path)
    obj = read_weights(path, allowed=SNAPSHOT_ALLOWED)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("not a state dict (name -> tensor), nor a snapshot whose 'model' entry is one", path,
                        "pass the published model.safetensors / checkpoint_*.pt")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path,
                 assign: bool = True) -> list[str]:
    """Load ``state_dict`` into ``model`` strictly; returns the heads removed because the file lacks them.

    Raises :class:`UserError` (one line) on unexpected keys, shape mismatches, or keys missing outside a whole
    optional head.
    """
    own = model.state_dict()
    unexpected = sorted(set(state_dict) - set(own))
    if unexpected and all(".spatial_mask_head." in f".{k}" for k in unexpected):
        raise UserError("a PAGE-4D file (it holds the spatial_mask_head) read as VGGT", source,
                        "pass --backbone page4d:<file> (or page4d-mask:<file>)")
    if unexpected:
        raise UserError(f"{len(unexpected)} unexpected key(s) for this backbone, e.g. {unexpected[:3]}", source,
                        "this file is not of this family or size: check the --backbone family and the config")
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if shapes:
        raise UserError(f"{len(shapes)} shape mismatch(es) (file vs network), e.g. {shapes[:2]}", source,
                        "pass the config the weights were trained with")
    missing = set(own) - set(state_dict)
    dropped = []
    for head in OPTIONAL_HEADS:
        keys = {k for k in own if k.startswith(head + ".")}
        if keys and keys <= missing:
            dropped.append(head)
            missing -= keys
    if missing and all(".spatial_mask_head." in f".{k}" for k in missing):
        raise UserError("a file without PAGE-4D's spatial_mask_head (VGGT weights?) read as PAGE-4D", source,
                        "pass --backbone vggt:<file>, or the PAGE-4D checkpoint_*.pt")
    if missing:
        miss = sorted(missing)
        raise UserError(f"{len(miss)} key(s) missing, e.g. {miss[:3]}", source,
                        "the file is incomplete or of another family: use the published weights file")
    for head in dropped:
        logger.warning("backbone weights %s hold no %s.* keys: the %s is unavailable (not left random)", source,
                       head, head.replace("_", " "))
        cast(Any, model).drop_head(head)  # the VGGT family's own method
    model.load_state_dict(state_dict, strict=True, assign=assign)
    return dropped
