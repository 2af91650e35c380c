"""The backbone registry: a family name gives its network, its checkpoint resolver and its facts.

A family lives in one module that calls :func:`register` at import; :data:`FAMILY_MODULES` lists those modules
(adding a backbone = one file + one line here). Commands never branch on a family name: they ask the family
(``streaming``, ``load``, ``tiny``) what to do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

#: modules that register the families, imported on first use
FAMILY_MODULES = ("model.streamvggt.family", "model.vggt.family")


@dataclass(frozen=True)
class BackboneFamily:
    """What a backbone family is and how to make one.

    Attributes:
        name: the ``--backbone`` prefix (``streamvggt``, ``vggt``, ``page4d``).
        summary: one line for ``--help`` and the README.
        streaming: True = causal global attention with a key/value cache (any length, bounded memory);
            False = global attention over every frame of a window (videos run in overlapping windows).
        build: ``build(config dict or None)`` -> the network with random weights, on the current default device
            (build under ``torch.device("meta")`` to inspect keys without allocating).
        tiny: ``tiny(seed)`` -> the seeded random tiny network (tests, the weight-free demo).
        resolve: ``resolve(source or None)`` -> the weights file a source names (a file, a folder, a Hub repo id
            downloaded when online, None = the family's default), or one :class:`~utils.cli.UserError` line.
        read: ``read(path)`` -> the flat state dict a weights file holds (never unpickling code).
        load: ``load(source or None, config dict or None)`` -> (network, the weights file) from published weights;
            strict, refusing pickled objects and foreign keys with one :class:`~utils.cli.UserError` line.
        default_source: where ``<name>`` alone looks for weights (text for messages).
        facts: token layout and references (``token_dim``, ``patch_start_idx``, ``dpt_layers``, paper, ...).
    """

    name: str
    summary: str
    streaming: bool
    build: Callable[[dict[str, Any] | None], nn.Module]
    tiny: Callable[[int], nn.Module]
    resolve: Callable[[str | None], Path]
    read: Callable[[Path], dict[str, Any]]
    load: Callable[[str | None, dict[str, Any] | None], tuple[nn.Module, Path]]
    default_source: str
    facts: dict[str, Any] = field(default_factory=dict)


_FAMILIES: dict[str, BackboneFamily] = {}


def register(family: BackboneFamily) -> BackboneFamily:
    """Add ``family`` (called by the family's module at import)."""
    _FAMILIES[family.name] = family
    return family


def _load_all() -> None:
    for module in FAMILY_MODULES:
        importlib.import_module(module)


def families() -> dict[str, BackboneFamily]:
    """Every registered family by name."""
    _load_all()
    return dict(_FAMILIES)


def get_family(name: str) -> BackboneFamily:
    """The family called ``name``; KeyError naming the known ones otherwise."""
    known = families()
    if name not in known:
        raise KeyError(f"unknown backbone family {name!r}; known: {', '.join(sorted(known))}")
    return known[name]
