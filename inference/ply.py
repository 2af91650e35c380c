"""Binary little-endian PLY point clouds: a writer, a streaming writer (bounded memory) and a reader.

Vertices carry ``x y z`` (float32), ``red green blue`` (uint8) and optional extra float32 scalar
properties (e.g. ``confidence``). The reader accepts any binary little-endian or ASCII PLY whose
``vertex`` element has scalar properties (no lists), which covers the files written here and the
usual exports of point-cloud tools.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from utils.io import CloseOnSuccess, atomic_path

# PLY scalar type names -> numpy dtypes (little-endian).
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}


def _vertex_dtype(extra_names: tuple[str, ...]) -> np.dtype:
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    fields += [(name, "<f4") for name in extra_names]
    return np.dtype(fields)


def _header(count: int, extra_names: tuple[str, ...], comment: str | None = None) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0"]
    if comment:
        lines.append(f"comment {comment}")
    lines += [f"element vertex {count}", "property float x", "property float y", "property float z",
              "property uchar red", "property uchar green", "property uchar blue"]
    lines += [f"property float {name}" for name in extra_names]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def _pack(xyz: np.ndarray, rgb: np.ndarray | None, extra: dict[str, np.ndarray] | None,
          extra_names: tuple[str, ...]) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    n = xyz.shape[0]
    if rgb is None:
        rgb = np.full((n, 3), 255, dtype=np.uint8)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise ValueError(f"PLY colours must be uint8 (0..255), got {rgb.dtype}; convert with (c*255).round()")
    rgb = rgb.reshape(-1, 3)
    if rgb.shape[0] != n:
        raise ValueError(f"PLY colours have {rgb.shape[0]} rows but there are {n} points")
    extra = extra or {}
    if set(extra) != set(extra_names):
        raise ValueError(f"PLY extra properties {sorted(extra)} do not match the declared {list(extra_names)}")
    out = np.empty(n, dtype=_vertex_dtype(extra_names))
    out["x"], out["y"], out["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    out["red"], out["green"], out["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    for name in extra_names:
        values = np.asarray(extra[name], dtype=np.float32).reshape(-1)
        if values.shape[0] != n:
            raise ValueError(f"PLY property {name!r} has {values.shape[0]} values but there are {n} points")
        out[name] = values
    return out


def write_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray | None = None,
              extra: dict[str, np.ndarray] | None = None, comment: str | None = None) -> int:
    """Write a binary PLY atomically.

    Args:
        xyz: (N, 3) positions (cast to float32).
        rgb: (N, 3) uint8 colours; white when None.
        extra: optional {name: (N,)} float32 scalar properties.
    Returns:
        N, the number of vertices written.
    """
    names = tuple(extra or {})
    data = _pack(xyz, rgb, extra, names)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(_header(len(data), names, comment))
        f.write(data.tobytes())
    return len(data)


class PlyStreamWriter(CloseOnSuccess):
    """Write a PLY whose vertex count is only known at the end, in bounded memory.

    Vertices are appended to a temporary body file; :meth:`close` writes the header, appends the
    body and renames the result onto ``path`` (atomic). Use as a context manager; on an exception
    nothing is written.

    Example::

        with PlyStreamWriter(out / "fused.ply") as w:
            for xyz, rgb in chunks:
                w.add(xyz, rgb)
    """

    def __init__(self, path: str | os.PathLike, extra_names: tuple[str, ...] = (), comment: str | None = None):
        self.path = Path(path)
        self.extra_names = tuple(extra_names)
        self.comment = comment
        self.count = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".body", dir=self.path.parent)
        self._body_path = Path(tmp)
        self._body = os.fdopen(fd, "wb")

    def add(self, xyz: np.ndarray, rgb: np.ndarray | None = None,
            extra: dict[str, np.ndarray] | None = None) -> None:
        """Append (N, 3) points with (N, 3) uint8 colours and the declared extra properties."""
        data = _pack(xyz, rgb, extra, self.extra_names)
        self._body.write(data.tobytes())
        self.count += len(data)

    def close(self) -> int:
        """Finish the file; returns the vertex count."""
        self._body.close()
        try:
            with atomic_path(self.path) as tmp, open(tmp, "wb") as f:
                f.write(_header(self.count, self.extra_names, self.comment))
                with open(self._body_path, "rb") as body:
                    shutil.copyfileobj(body, f, length=1 << 22)
        finally:
            self._body_path.unlink(missing_ok=True)
        return self.count

    def abort(self) -> None:
        """Drop everything written so far (the target file is left untouched)."""
        self._body.close()
        self._body_path.unlink(missing_ok=True)



def read_ply_header(path: str | os.PathLike) -> tuple[str, int, list[tuple[str, str]], int]:
    """Parse a PLY header: returns (format, vertex count, [(property, numpy dtype)], header bytes)."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path} is not a PLY file (missing 'ply' magic line)")
        fmt, count, props, element = None, None, [], None
        while True:
            raw = f.readline()
            if not raw:
                raise ValueError(f"{path}: PLY header has no end_header line")
            parts = raw.decode("ascii", errors="replace").split()
            if not parts or parts[0] in ("comment", "obj_info"):
                continue
            if parts[0] == "format":
                fmt = parts[1]
            elif parts[0] == "element":
                element = parts[1]
                if element == "vertex":
                    count = int(parts[2])
                elif count is not None and not props:
                    raise ValueError(f"{path}: vertex element has no properties")
            elif parts[0] == "property" and element == "vertex":
                if parts[1] == "list":
                    raise ValueError(f"{path}: list properties in the vertex element are not supported")
                if parts[1] not in _PLY_TYPES:
                    raise ValueError(f"{path}: unknown PLY property type {parts[1]!r}")
                props.append((parts[2], _PLY_TYPES[parts[1]]))
            elif parts[0] == "end_header":
                break
        header_len = f.tell()
    if fmt not in ("binary_little_endian", "ascii"):
        raise ValueError(f"{path}: PLY format {fmt!r} is not supported (binary_little_endian or ascii)")
    if count is None:
        raise ValueError(f"{path}: PLY has no vertex element")
    return fmt, count, props, header_len


def read_ply(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the vertex element of a PLY.

    Returns:
        {"xyz": (N, 3) float32, "rgb": (N, 3) uint8 (when red/green/blue exist), and every other
        property by name as (N,) arrays}.
    """
    fmt, count, props, header_len = read_ply_header(path)
    dtype = np.dtype(props)
    if fmt == "binary_little_endian":
        with open(path, "rb") as f:
            f.seek(header_len)
            buf = f.read(dtype.itemsize * count)
        if len(buf) != dtype.itemsize * count:
            raise ValueError(f"{path}: PLY body is truncated ({len(buf)} bytes, expected {dtype.itemsize * count})")
        data = np.frombuffer(buf, dtype=dtype, count=count)
    else:
        with open(path, "rb") as f:
            f.seek(header_len)
            table = np.loadtxt(f, max_rows=count, ndmin=2) if count else np.zeros((0, len(props)))
        data = np.empty(count, dtype=dtype)
        for i, (name, _) in enumerate(props):
            data[name] = table[:, i]
    names = [p[0] for p in props]
    out: dict[str, np.ndarray] = {}
    if all(n in names for n in ("x", "y", "z")):
        out["xyz"] = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float32)
    if all(n in names for n in ("red", "green", "blue")):
        out["rgb"] = np.stack([data["red"], data["green"], data["blue"]], axis=1).astype(np.uint8)
    for name in names:
        if name not in ("x", "y", "z", "red", "green", "blue"):
            out[name] = np.array(data[name])
    return out
