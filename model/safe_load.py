"""Reading ``.pth`` files without ever executing their pickles.

Every ``torch.load`` of the project goes through :func:`torch_load_safe`: ``weights_only=True`` (tensors,
numbers, strings and containers only) plus an explicit allow-list of the classes a published format needs
(``argparse.Namespace`` for the 4DLangVGGT training checkpoint). A file whose pickle asks for anything else is
refused with one sentence naming the object it wanted; nothing of it is executed.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from utils.cli import UserError


class UnsafeCheckpointError(UserError):
    """A ``.pth`` whose pickle would create an object outside the allow-list (never executed)."""


class UnreadableCheckpointError(UserError):
    """A file that is not a readable PyTorch checkpoint (truncated, empty, not a checkpoint at all)."""


def _refused_global(message: str) -> str:
    m = re.search(r"GLOBAL ([\w.]+)", message)
    return m.group(1) if m else "an object that is not a tensor, a number, a string or a container"


def torch_load_safe(path: str | os.PathLike, allowed: Sequence[type] = (), mmap: bool = True) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, allowing exactly the classes in ``allowed``.

    Raises :class:`UnsafeCheckpointError` when the pickle wants any other object and
    :class:`UnreadableCheckpointError` when the file is not a PyTorch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError("checkpoint file not found", path, "check the path")
    if path.stat().st_size == 0:
        raise UnreadableCheckpointError("empty checkpoint file", path, "download or copy it again")

    def load(use_mmap: bool) -> Any:
        # torch warns about odd pickle protocols of garbage files; the outcome is reported below, in one line
        with torch.serialization.safe_globals(list(allowed)), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)

    try:
        try:
            return load(mmap)
        except RuntimeError as e:
            if not mmap or "mmap" not in str(e):
                raise
            return load(False)  # legacy (non-zip) files cannot be memory-mapped
    except pickle.UnpicklingError as e:
        wanted = _refused_global(str(e))
        raise UnsafeCheckpointError(
            f"refused to load: its pickle asks for {wanted}, which no weights file needs; nothing of it was "
            "executed", path, "use the official weights file (or a .safetensors file); never unpickle files of "
            "unknown origin") from None
    except Exception as e:  # garbage bytes make torch's reader fail in many ways (EOF, zip, index, key errors)
        raise UnreadableCheckpointError(
            f"not a readable PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:120]})", path,
            "the file is truncated or of another format; download or copy it again") from None


@contextlib.contextmanager
def open_safetensors(path: str | os.PathLike,
                     fix: str = "the file is truncated or of another format; write or copy it again") -> Iterator[Any]:
    """``safe_open`` on CPU; a file that is not a readable safetensors file is one :class:`UnreadableCheckpointError`
    naming it (``fix`` says what to do)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            yield f
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UnreadableCheckpointError(f"not a readable safetensors file ({str(e).splitlines()[0][:120]})", path,
                                        fix) from None


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a ``.safetensors`` file; a file that is not one gives a clear :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError("weights file not found", path, "check the path")
    with open_safetensors(path) as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def read_weights(path: str | os.PathLike, allowed: Sequence[type] = ()) -> Any:
    """A ``.safetensors`` file's tensors, or whatever a ``.pth``/``.pt``/``.bin`` holds (safely, see above)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    return torch_load_safe(path, allowed=allowed)
