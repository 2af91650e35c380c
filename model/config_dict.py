"""The one way our dataclass configs travel as JSON (checkpoints' ``state.json``, Hub ``config.json``, the
``langvggt4d`` metadata key of a decoder file, token caches): tuples become lists and back, and an unknown key is
refused by name instead of being dropped or failing deep inside the constructor."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self, cast


class DictConfig:
    """Mixin for a ``@dataclass`` config: :meth:`to_dict` / :meth:`from_dict`.

    ``CONFIG_NAME`` names the config in the unknown-key error (``unknown decoder config keys [...]``).
    Subclasses that need more (defaults for keys older files lack, cross-field checks) override
    :meth:`from_dict` and call :meth:`kwargs_from_dict`.
    """

    CONFIG_NAME: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of the fields (top-level tuples become lists)."""
        fields = dataclasses.asdict(cast(Any, self))  # every subclass is a dataclass
        return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}

    @classmethod
    def kwargs_from_dict(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Constructor keywords from a :meth:`to_dict` dict: unknown keys raise ValueError, lists become tuples."""
        names = {f.name for f in dataclasses.fields(cast(Any, cls))}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown {cls.CONFIG_NAME} keys {sorted(unknown)}; known: {sorted(names)}")
        return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`."""
        return cls(**cls.kwargs_from_dict(d))
