"""Crash-safe file writing: every file this project writes goes through a temp file and a rename.

An interrupted run therefore leaves either the old file or the complete new one, never a
half-written file. Nothing here (or anywhere in the library) reads or writes pickles; only the benchmarks
re-create the published pickled baseline, in their own temporary folders.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

_UMASK_LOCK = threading.Lock()


def _current_umask() -> int:
    """The process umask (reading it requires setting it, so do that under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temp file lives in the same directory (same filesystem), so the final ``os.replace`` is atomic.
    On any exception the temp file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # read-only disk, no permission: name the folder, not a random temporary name
        e.filename = str(path.parent)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:
            e.filename = str(path)  # a full disk says which file it could not write
        raise


class CloseOnSuccess:
    """Mixin for streaming writers: as a context manager, ``close()`` on success and ``abort()`` on error,
    so a failed run never leaves a half-written file behind."""

    def close(self):  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def abort(self) -> None:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def canonicalise_safetensors_header(path: str | os.PathLike) -> None:
    """Rewrite a safetensors file's header in place with its ``__metadata__`` keys sorted.

    The safetensors writer keeps the metadata in a hash map, so a file with several metadata keys comes out with
    different bytes on every run. The sorted header has exactly the same length (same entries, other order), so
    the tensor offsets do not move; the JSON is written as the writer writes it (compact, UTF-8).
    """
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
        header = json.loads(raw)
        meta = header.get("__metadata__")
        if not meta or len(meta) < 2:
            return
        header["__metadata__"] = dict(sorted(meta.items()))
        new = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(new) > n or new.rstrip() == raw.rstrip():
            return
        f.seek(8)
        f.write(new + b" " * (n - len(new)))


def save_safetensors_atomic(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` (contiguous CPU copies are made) as a safetensors file, atomically and byte-deterministically
    (the metadata keys are stored sorted, see :func:`canonicalise_safetensors_header`)."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=metadata)
        canonicalise_safetensors_header(tmp)


def save_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented, valid JSON, atomically: non-finite floats (NaN, +-inf), which standard JSON
    readers reject, are written as ``null``."""
    from utils.cli import json_safe

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def save_npy_atomic(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write ``array`` as a .npy file (never pickled), atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Read a .npy file without ever unpickling: an object array, a bad header or a truncated file is one
    :class:`utils.cli.BadFileError` naming the file."""
    from utils.cli import reading

    with reading(path, "write the file again as a plain numeric .npy (np.save(..., allow_pickle=False))"):
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)


def read_json(path: str | os.PathLike, fix: str = "fix or regenerate the JSON file") -> Any:
    """The parsed content of a JSON file; a file that is not valid JSON (or not UTF-8 text) is one
    :class:`utils.cli.BadFileError` naming it."""
    from utils.cli import reading

    with reading(path, fix):
        return json.loads(Path(path).read_text(encoding="utf-8"))


def npy_problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` is a complete .npy file of plain numbers (header readable, no object dtype, exactly as
    many data bytes as the header says), else what is wrong with it (without the path). Reads only the header."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            offset = f.tell()
        size = path.stat().st_size
    except (OSError, ValueError, EOFError, SyntaxError) as e:
        return f"unreadable .npy ({e})"
    except Exception as e:  # numpy's header parser raises tokenize.TokenError on some garbage
        if type(e).__name__ != "TokenError":
            raise
        return "unreadable .npy header"
    if dtype.hasobject:
        return "holds Python objects, not plain numbers"
    want = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size != want:
        return f"{size} bytes but its header describes {want}"
    return None


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` is a complete safetensors file (header parses, every tensor's bytes lie inside the file
    and the file ends where the last tensor ends), else what is wrong (without the path). Reads only the header."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                return f"truncated or not safetensors ({size} bytes)"
            header = json.loads(f.read(n))
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f"unreadable safetensors header ({e})"
    if size != 8 + n + end:
        return f"{size} bytes but its header describes {8 + n + end}"
    return None


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def png_problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` starts with the PNG signature and ends with the IEND chunk (a cheap completeness check),
    else what is wrong (without the path)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            start = f.read(8)
            f.seek(max(0, path.stat().st_size - len(_PNG_END)))
            end = f.read()
    except OSError as e:
        return f"unreadable ({e})"
    if start != b"\x89PNG\r\n\x1a\n" or end != _PNG_END:
        return "not a complete PNG file"
    return None


def file_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with an output file a resumed run would keep (by type: ``.npy``, ``.safetensors``, ``.png``
    are checked against their own structure; other types only for existence), or None (the reason, without the
    path)."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    check = {".npy": npy_problem, ".safetensors": safetensors_problem, ".png": png_problem}.get(path.suffix.lower())
    return check(path) if check else None


def save_npz_atomic(arrays: dict[str, np.ndarray], path: str | os.PathLike, *, compress: bool = False) -> None:
    """The one ``.npz`` writer: ``np.savez`` layout (a zip of ``<name>.npy``, keys sorted; deflated with
    ``compress``, as ``np.savez_compressed``) with fixed zip timestamps, so the same arrays give the same bytes
    whatever numpy version writes them, written atomically. Never pickles (object arrays are refused)."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name in sorted(arrays):
            arr = io.BytesIO()
            # (np.asarray keeps a 0-d array 0-d; ascontiguousarray would make it shape (1,))
            np.lib.format.write_array(arr, np.asarray(arrays[name], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = method
            zf.writestr(info, arr.getvalue())
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(buf.getvalue())
