"""One command-line convention for every entry point.

An *expected* failure (bad input, missing file, refused checkpoint, mismatch between what a step reads and what
produced it) is raised as :class:`UserError` and ends the program with one line on stderr,
``error: <what is wrong> (<file>): <how to fix it>``, and exit code 2; the traceback is printed only with
``--debug`` or ``LANGVGGT4D_DEBUG=1``. Unexpected exceptions keep their traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
EXIT_USER_ERROR = 2


class UserError(Exception):
    """An expected failure: ``str(e)`` is ``<what> (<file>): <fix>`` (file and fix optional)."""

    def __init__(self, what: str, file: str | os.PathLike | None = None, fix: str | None = None) -> None:
        self.what, self.file, self.fix = what, (str(file) if file is not None else None), fix
        text = what
        if self.file:
            text += f" ({self.file})"
        if fix:
            text += f": {fix}"
        super().__init__(text)


def debug_requested(argv: list[str] | None = None) -> bool:
    """``--debug`` on the command line or ``LANGVGGT4D_DEBUG=1`` in the environment."""
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get("LANGVGGT4D_DEBUG", "") not in ("", "0")


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """The one logging set-up of every entry point: INFO (``-q`` WARNING, ``-v`` DEBUG) to stderr."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def run_cli(main: Callable[..., T], argv: list[str] | None = None) -> T:
    """Call ``main(argv)``; a :class:`UserError` ends in one ``error:`` line and exit code 2."""
    try:
        return main(argv)
    except UserError as e:
        if debug_requested(argv):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None


def require_path(path: str | os.PathLike, what: str, fix: str, kind: str = "any") -> Path:
    """``path`` as a Path if it exists (``kind`` = ``file``, ``dir`` or ``any``), else a :class:`UserError`."""
    p = Path(path)
    ok = p.is_file() if kind == "file" else p.is_dir() if kind == "dir" else p.exists()
    if not ok:
        raise UserError(f"{what} not found", p, fix)
    return p


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats by None (so ``json.dumps`` writes valid JSON), recursively."""
    import math

    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
