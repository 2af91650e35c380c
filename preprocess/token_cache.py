"""The on-disk geometry-token cache: one safetensors file per frame, memory-mapped on read, validated.

Layout (docs/architecture.md §3)::

    <scene>/tokens/meta.json                 scene-level metadata (cheap validation, frame list)
    <scene>/tokens/<frame key>.safetensors   tensors layer_04, layer_11, ... each (P, 2C), P = patch_start_idx + h*w

Each frame file holds only the aggregator layers the decoder reads (default the backbone's DPT layers
4, 11, 17, 23), in fp16 by default (bf16/fp32 on request, or int8, below). Its safetensors metadata has a single key,
``langvggt4d.tokens``, whose value is a canonical JSON object (sorted keys) with: format and version,
backbone id, layers, embed/token dim, token count, patch grid, ``patch_start_idx``, patch size, storage and
compute dtype, crop/resize (:class:`preprocess.frames.CropInfo` as a dict), frame key and index, window,
chunk size, ``history`` (``full`` unless the frame was written after a windowed resume replay) and the
sha256 of the tensor bytes. One key, because safetensors writes several metadata keys in a random order,
and files must be byte-identical from run to run (no timestamps either).

int8 storage (``--dtype int8``, format version 2; float files stay version 1): symmetric per-token
quantisation. For each layer and each token row ``x`` (2C values), ``scale = max|x| / 127`` stored as fp16
*rounded up* (so ``|x| / scale <= 127``; a zero row has scale 0), and ``q = round(x / scale)`` (nearest,
computed in float32 on the CPU, so files do not depend on the device) in [-127, 127], one byte per
value. Tensors ``layer_LL`` (P, 2C) int8 and ``scale_LL`` (P,) fp16; the value is ``q * scale``, within
``scale / 2`` (= max|x| / 254 of its row) of the original; the product is exact in fp32.
:meth:`TokenCache.load` and :func:`load_token_file` map the file and de-quantise on the fly into float32
tensors (or the ``dtype`` asked for), so consumers see floats as for fp16 caches, while the bytes stay int8
on disk and in the page cache (half of fp16, plus 2 bytes of scale per token row and layer). Readers from
before int8 existed refuse these files by their format version ("token format version 2 but this code
reads version 1"); a file whose tensors do not match its stated storage is refused by name.

Nothing here uses pickle; reads never execute code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.cli import UserError
from utils.io import save_json_atomic, save_safetensors_atomic

logger = logging.getLogger(__name__)

FORMAT = "langvggt4d-tokens"
FORMAT_VERSION = 1  # float storage (fp16 / bf16 / fp32)
INT8_FORMAT_VERSION = 2  # int8 storage with per-token scales (older readers refuse it by version)
READ_VERSIONS = (FORMAT_VERSION, INT8_FORMAT_VERSION)
META_KEY = "langvggt4d.tokens"
META_FILE = "meta.json"
SUFFIX = ".safetensors"

STORAGE_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
                                          "int8": torch.int8}
_ST_DTYPES: dict[str, torch.dtype] = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
                                      "I8": torch.int8}
_DTYPE_NAMES = {v: k for k, v in STORAGE_DTYPES.items()}
INT8_QMAX = 127
INT8_SCHEME = "symmetric-per-token: value = q * scale, scale = max|x|/127 (fp16, rounded up), q int8 in [-127, 127]"
_MAX_HEADER = 100 * 1024 * 1024

# Fields a consumer (decoder, trainer) may require to match; see TokenCache.validate.
CONSUMER_FIELDS = ("backbone", "layers", "token_dim", "grid", "patch_start_idx", "patch_size")
# Fields every frame file shares with its folder's meta.json (the run configuration).
RUN_FIELDS = CONSUMER_FIELDS + ("embed_dim", "num_tokens", "dtype", "compute_dtype", "crop", "window", "chunk_size")

EXTRACT_HINT = ("re-extract with `python -m preprocess.extract_tokens <frames> --overwrite` "
                "using the settings the decoder expects")


class TokenCacheError(UserError, RuntimeError):
    """A token file or folder is missing, truncated, corrupted or does not match what is expected: an expected
    failure (one ``error:`` line at the command line); its message starts with the file."""


def layer_name(layer: int) -> str:
    """Tensor name of aggregator layer ``layer`` (zero-padded: 4 -> ``layer_04``)."""
    return f"layer_{int(layer):02d}"


def scale_name(layer: int) -> str:
    """Tensor name of the int8 scales of aggregator layer ``layer`` (``scale_04``)."""
    return f"scale_{int(layer):02d}"


def dtype_name(dtype: torch.dtype) -> str:
    """torch dtype -> ``fp16`` | ``bf16`` | ``fp32`` | ``int8``."""
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise ValueError(f"unsupported token storage dtype {dtype}; use fp16, bf16, fp32 or int8") from None


def format_version(dtype: str) -> int:
    """The format version of files stored as ``dtype`` (a storage dtype name)."""
    return INT8_FORMAT_VERSION if dtype == "int8" else FORMAT_VERSION


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, D) float tokens -> (q (P, D) int8, scale (P,) fp16) with ``|x - q * scale| <= scale / 2`` exactly.

    ``scale`` = max|x| of the row / 127, rounded *up* to fp16 (so no value is clipped). ``q`` is rounded in
    float32 on the CPU (deterministic whatever device made ``x``); the residual ``x - q * scale`` is exact in
    float32, and the rare values that fp32 division rounded onto the wrong side of a half step are moved one
    step. Raises FloatingPointError for NaN/inf or values beyond the fp16 scale range (max|x| > 127 * 65504).
    """
    if x.dim() != 2:
        raise ValueError(f"expected (P, D) tokens, got shape {tuple(x.shape)}")
    x32 = x.detach().to("cpu", torch.float32)
    amax = x32.abs().amax(dim=1)
    if not bool(torch.isfinite(amax).all()):
        raise FloatingPointError("NaN/inf tokens cannot be quantised to int8")
    target = amax.to(torch.float64) / INT8_QMAX
    scale = target.to(torch.float16)
    low = scale.to(torch.float64) < target
    if bool(low.any()):  # round up to the next fp16
        scale = torch.where(low, torch.nextafter(scale, torch.full_like(scale, float("inf"))), scale)
    if not bool(torch.isfinite(scale).all()):
        raise FloatingPointError(f"token values up to {float(amax.max()):.4g} exceed the int8 scheme's fp16 "
                                 "scale range; use --dtype fp32 or bf16")
    s = scale.to(torch.float32)[:, None]
    q = torch.div(x32, s.clamp_min(2.0 ** -24)).round_().clamp_(-INT8_QMAX, INT8_QMAX)
    res = x32 - q * s  # exact: q * s has <= 18 significant bits, and x is within a step of it
    off = (2 * res.abs()) > s
    if bool(off.any()):
        q += torch.where(off, torch.sign(res), torch.zeros_like(res))
    return q.to(torch.int8), scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """(P, D) int8 ``q`` and (P,) ``scale`` -> ``q * scale`` as a new (P, D) ``dtype`` tensor on ``device``.

    The int8 bytes are moved first (4x less traffic than floats); the product is formed in float32 (exact)."""
    if not dtype.is_floating_point:
        raise ValueError(f"int8 tokens de-quantise to a floating dtype, not {dtype}")
    if device is not None:
        q, scale = q.to(device), scale.to(device)
    out = q.to(torch.float32)
    out.mul_(scale.to(torch.float32)[:, None])
    return out if dtype == torch.float32 else out.to(dtype)


def canonical_json(obj: Any) -> str:
    """Deterministic compact JSON (sorted keys) used for the metadata."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a CPU tensor (any dtype, bf16 included), without copying if contiguous."""
    t = t.detach().to("cpu").contiguous()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def _checksum(named_bytes: Iterable[tuple[str, Any]]) -> str:
    h = hashlib.sha256()
    for name, buf in named_bytes:
        h.update(name.encode())
        h.update(buf)
    return h.hexdigest()


def write_token_file(path: str | os.PathLike, tokens: Sequence[torch.Tensor], layers: Sequence[int],
                     meta: dict[str, Any], scales: Sequence[torch.Tensor] | None = None) -> None:
    """Write one frame's tokens atomically.

    tokens: one (P, 2C) tensor per entry of ``layers`` (already in the storage dtype; all the same dtype).
    scales: for int8 tokens (see :func:`quantize_int8`), one (P,) fp16 scale tensor per layer; else None.
    meta: JSON-serialisable fields; ``layers``, ``dtype``, ``num_tokens``, ``token_dim``, ``format``,
    ``version`` (and ``quantization`` for int8) and ``sha256`` are filled in here.
    """
    if len(tokens) != len(layers):
        raise ValueError(f"{len(tokens)} token tensors for {len(layers)} layers")
    dtypes = {t.dtype for t in tokens}
    if len(dtypes) != 1:
        raise ValueError(f"all layers must share one dtype, got {dtypes}")
    shapes = {tuple(t.shape) for t in tokens}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"expected (P, 2C) tensors of one shape, got {shapes}")
    P, D = next(iter(shapes))
    dtype = dtype_name(next(iter(dtypes)))
    named = {layer_name(li): t.detach().to("cpu").contiguous() for li, t in zip(layers, tokens, strict=True)}
    full = dict(meta)
    if dtype == "int8":
        if scales is None or len(scales) != len(layers):
            raise ValueError("int8 tokens need one (P,) fp16 scale tensor per layer (see quantize_int8)")
        if any(sc.dtype != torch.float16 or tuple(sc.shape) != (P,) for sc in scales):
            raise ValueError(f"int8 scales must be ({P},) fp16 tensors, got "
                             f"{sorted({(tuple(sc.shape), str(sc.dtype)) for sc in scales})}")
        named.update({scale_name(li): sc.detach().to("cpu").contiguous() for li, sc in zip(layers, scales,
                                                                                           strict=True)})
        full["quantization"] = INT8_SCHEME
    elif scales is not None:
        raise ValueError(f"scales are only stored with int8 tokens, not {dtype}")
    full.update(format=FORMAT, version=format_version(dtype), layers=[int(x) for x in layers],
                dtype=dtype, num_tokens=int(P), token_dim=int(D))
    full["sha256"] = _checksum((n, tensor_bytes(named[n])) for n in sorted(named))
    save_safetensors_atomic(named, path, metadata={META_KEY: canonical_json(full)})


def read_token_header(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, dict[str, Any]], int]:
    """Parse and check a token file's header without reading the tensors.

    Returns ``(meta, tensors, data_start)`` where ``tensors`` maps each layer tensor's name (``layer_04`` ..)
    -> {dtype, shape, data_offsets} (offsets relative to ``data_start``): one (P, 2C) entry per stored layer
    whatever the storage; an int8 layer's entry also holds its scales' entry under ``"scale"``. Raises
    TokenCacheError naming the file when it is missing, truncated, not safetensors, not a token file of a
    format version this code reads, or when its tensors do not match its metadata.
    """
    path = Path(path)
    fix = f"delete it and re-run the extraction (it resumes and rewrites only the bad frames): {EXTRACT_HINT}"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise TokenCacheError(f"{path}: truncated token file ({size} bytes, no header); {fix}")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise TokenCacheError(f"{path}: truncated or corrupted token file (header length {n}, "
                                      f"file {size} bytes); {fix}")
            raw = f.read(n)
    except FileNotFoundError:
        raise TokenCacheError(f"{path}: token file missing; {EXTRACT_HINT}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
        meta = json.loads(header.pop("__metadata__")[META_KEY])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise TokenCacheError(f"{path}: corrupted header or not a token file of this project "
                              f"(no '{META_KEY}' metadata); {fix}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TokenCacheError(f"{path}: not a {FORMAT} file; {fix}")
    if meta.get("version") not in READ_VERSIONS:
        raise TokenCacheError(f"{path}: token format version {meta.get('version')} but this code reads "
                              f"version(s) {', '.join(map(str, READ_VERSIONS))}; {EXTRACT_HINT}")
    if meta.get("version") != format_version(meta.get("dtype")):
        raise TokenCacheError(f"{path}: format version {meta.get('version')} does not go with storage dtype "
                              f"{meta.get('dtype')!r}; {fix}")
    end = 0
    for name, info in header.items():
        try:
            a, b = info["data_offsets"]
            dt = _ST_DTYPES[info["dtype"]]
            numel = int(np.prod(info["shape"])) if info["shape"] else 1
        except (KeyError, TypeError, ValueError):
            raise TokenCacheError(f"{path}: corrupted header entry for tensor {name!r}; {fix}") from None
        if b - a != numel * torch.empty((), dtype=dt).element_size() or a < 0:
            raise TokenCacheError(f"{path}: corrupted header entry for tensor {name!r}; {fix}")
        end = max(end, b)
    data_start = 8 + n
    if size != data_start + end:
        raise TokenCacheError(f"{path}: truncated or corrupted token file ({size} bytes on disk, header "
                              f"describes {data_start + end}); {fix}")
    layers = meta.get("layers", [])
    int8 = meta.get("dtype") == "int8"
    expected = {layer_name(li) for li in layers} | ({scale_name(li) for li in layers} if int8 else set())
    if set(header) != expected:
        raise TokenCacheError(f"{path}: tensors {sorted(header)} do not match the layers {meta.get('layers')} "
                              f"and storage {meta.get('dtype')!r} in its metadata; {fix}")
    if int8:
        p, d = meta.get("num_tokens"), meta.get("token_dim")
        for li in layers:
            q, sc = header[layer_name(li)], header[scale_name(li)]
            if q["dtype"] != "I8" or q["shape"] != [p, d] or sc["dtype"] != "F16" or sc["shape"] != [p]:
                raise TokenCacheError(f"{path}: int8 file with tensors {layer_name(li)} {q['dtype']} {q['shape']} "
                                      f"/ {scale_name(li)} {sc['dtype']} {sc['shape']}, expected I8 [{p}, {d}] / "
                                      f"F16 [{p}]; {fix}")
    elif any(header[layer_name(li)]["dtype"] == "I8" for li in layers):
        raise TokenCacheError(f"{path}: int8 tensors in a file whose metadata says {meta.get('dtype')!r}; {fix}")
    else:  # float storage: every layer (num_tokens, token_dim) in the stated dtype, so readers can stack them
        p, d = meta.get("num_tokens"), meta.get("token_dim")
        want = next((k for k, v in _ST_DTYPES.items() if v == STORAGE_DTYPES.get(meta.get("dtype"))), None)
        for li in layers:
            t = header[layer_name(li)]
            if t["dtype"] != want or t["shape"] != [p, d]:
                raise TokenCacheError(f"{path}: tensor {layer_name(li)} is {t['dtype']} {t['shape']} but its "
                                      f"metadata says {want} [{p}, {d}]; {fix}")
    tensors = {layer_name(li): dict(header[layer_name(li)]) for li in layers}
    if int8:
        for li in layers:
            tensors[layer_name(li)]["scale"] = header[scale_name(li)]
    return meta, tensors, data_start


def _stored(tensors: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every tensor stored in the file (layers and int8 scales) by name, from :func:`read_token_header`'s map."""
    out = {}
    for name, info in tensors.items():
        out[name] = info
        if "scale" in info:
            out["scale_" + name.removeprefix("layer_")] = info["scale"]
    return out


def _map_file(path: Path, header: dict[str, dict[str, Any]], data_start: int, mmap: bool
              ) -> tuple[np.ndarray, dict[str, torch.Tensor]]:
    """The data bytes (memory map or in-memory copy) and a tensor view per stored tensor (scales included)."""
    if mmap:
        total = path.stat().st_size - data_start
        buf = np.memmap(path, dtype=np.uint8, mode="c", offset=data_start, shape=(total,)) if total else \
            np.zeros(0, np.uint8)
    else:
        with open(path, "rb") as f:
            f.seek(data_start)
            buf = np.frombuffer(bytearray(f.read()), dtype=np.uint8)
    views = {}
    for name, info in _stored(header).items():
        a, b = info["data_offsets"]
        views[name] = torch.from_numpy(buf[a:b]).view(_ST_DTYPES[info["dtype"]]).reshape(info["shape"])
    return buf, views


def _verify(path: Path, meta: dict[str, Any], header: dict[str, dict[str, Any]], buf: np.ndarray) -> None:
    stored = _stored(header)
    got = _checksum((n, memoryview(buf[stored[n]["data_offsets"][0]:stored[n]["data_offsets"][1]]))
                    for n in sorted(stored))
    if got != meta.get("sha256"):
        raise TokenCacheError(f"{path}: checksum mismatch, the token data is corrupted; delete it and re-run "
                              f"the extraction (it resumes and rewrites only the bad frames)")


def verify_token_file(path: str | os.PathLike) -> dict[str, Any]:
    """Check a token file's header and the sha256 of its tensor bytes (no de-quantisation); return its
    metadata. Raises TokenCacheError naming the file."""
    path = Path(path)
    meta, header, data_start = read_token_header(path)
    buf, _ = _map_file(path, header, data_start, mmap=True)
    _verify(path, meta, header, buf)
    return meta


def load_quantized_token_file(path: str | os.PathLike, verify: bool = False, mmap: bool = True
                              ) -> tuple[list[torch.Tensor], list[torch.Tensor], dict[str, Any]]:
    """The stored int8 values and scales of an int8 token file: ``([q (P, 2C) int8], [scale (P,) fp16], meta)``
    in metadata layer order (memory-mapped views). Refuses (TokenCacheError) a file stored in another dtype."""
    path = Path(path)
    meta, header, data_start = read_token_header(path)
    if meta.get("dtype") != "int8":
        raise TokenCacheError(f"{path}: stored as {meta.get('dtype')}, not int8: read it with load_token_file")
    buf, views = _map_file(path, header, data_start, mmap)
    if verify:
        _verify(path, meta, header, buf)
    return ([views[layer_name(li)] for li in meta["layers"]], [views[scale_name(li)] for li in meta["layers"]],
            meta)


def load_token_file(path: str | os.PathLike, verify: bool = False, mmap: bool = True,
                    dtype: torch.dtype | None = None, device: torch.device | str | None = None
                    ) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Read one frame's tokens: ``([tensor (P, 2C) per layer, in metadata layer order], meta)``.

    Float files: with ``mmap`` (default) the tensors are copy-on-write views of a memory map of the file
    (nothing is read until used), converted only when ``dtype``/``device`` are given. int8 files are
    de-quantised on the fly from the mapped bytes into new ``dtype`` (default float32) tensors on ``device``.
    ``verify`` recomputes the sha256 of the tensor bytes and raises TokenCacheError on mismatch.
    """
    path = Path(path)
    meta, header, data_start = read_token_header(path)
    buf, views = _map_file(path, header, data_start, mmap)
    if verify:
        _verify(path, meta, header, buf)
    if meta.get("dtype") == "int8":
        out = [dequantize_int8(views[layer_name(li)], views[scale_name(li)], dtype or torch.float32, device)
               for li in meta["layers"]]
    else:
        out = [views[layer_name(li)] for li in meta["layers"]]
        if device is not None or dtype is not None:
            out = [t.to(device=device, dtype=dtype) for t in out]
    return out, meta


@dataclass(frozen=True)
class TokenSlices:
    """Where one frame's float layers lie in its token file: enough to read them straight into the rows of a batch
    (:meth:`read_into`) with one ``preadv`` per layer, no memory map and no intermediate copy. From
    :meth:`TokenCache.locate`, after the header and the frame's metadata were checked."""

    path: Path
    offsets: tuple[int, ...]  # file offset of each layer's bytes, in metadata layer order
    shape: tuple[int, int]  # (P, 2C)
    dtype: torch.dtype  # the storage dtype (fp16 / bf16 / fp32)

    def read_into(self, outs: Sequence[torch.Tensor], b: int) -> None:
        """Write layer ``i`` into ``outs[i][b]`` (each out (B, P, 2C), C-contiguous), converting when an out has
        another dtype than the storage (through one staging row). A short read (the file shrank since its header
        was checked) raises :class:`TokenCacheError` naming the file."""
        nbytes = int(np.prod(self.shape)) * torch.empty((), dtype=self.dtype).element_size()
        staging = None
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for out, offset in zip(outs, self.offsets, strict=True):
                dest = out[b]
                if dest.dtype != self.dtype:
                    staging = torch.empty(self.shape, dtype=self.dtype) if staging is None else staging
                    target = staging
                else:
                    target = dest
                got = os.preadv(fd, [target.view(torch.uint8).numpy()], offset)
                if got != nbytes:
                    raise TokenCacheError(f"{self.path}: truncated token file (read {got} of {nbytes} bytes of a "
                                          f"layer); {EXTRACT_HINT}")
                if target is not dest:
                    dest.copy_(target)
        finally:
            os.close(fd)

    def load(self) -> list[torch.Tensor]:
        """The layers as new (P, 2C) tensors of the storage dtype."""
        outs = [torch.empty((1, *self.shape), dtype=self.dtype) for _ in self.offsets]
        self.read_into(outs, 0)
        return [o[0] for o in outs]


def describe_mismatch(meta: dict[str, Any], expected: dict[str, Any], skip_none: bool = True) -> list[str]:
    """Human-readable differences between ``meta`` and the ``expected`` fields. With ``skip_none`` an expected
    value of None means "not checked"; without, None must match too (e.g. an unbounded window)."""
    out = []
    for k, v in expected.items():
        if v is None and skip_none:
            continue
        got = meta.get(k)
        if isinstance(v, tuple):
            v = list(v)
        if got != v:
            out.append(f"{k} is {got!r} but {v!r} is expected")
    return out


def frame_meta_for(scene_meta: dict[str, Any], key: str, index: int, history: str = "full") -> dict[str, Any]:
    """Metadata of frame ``key`` (0-based ``index``) of a run described by ``scene_meta`` (meta.json content).
    ``history``: ``full`` when the frame's streaming cache saw the whole video so far (uninterrupted run or
    a full replay on resume), ``window`` when only the last ``window`` frames were replayed."""
    meta = {f: scene_meta[f] for f in RUN_FIELDS}
    meta.update(frame_key=key, frame_index=int(index), history=history)
    return meta


def frame_mismatches(meta: dict[str, Any], scene_meta: dict[str, Any], key: str, index: int) -> list[str]:
    """Differences between a frame file's metadata and what its folder's meta.json implies."""
    expected = {f: scene_meta.get(f) for f in RUN_FIELDS}
    expected.update(frame_key=key, frame_index=int(index))
    return describe_mismatch(meta, expected, skip_none=False)


def check_frame_file(path: str | os.PathLike, scene_meta: dict[str, Any], key: str, index: int,
                     require_full_history: bool = False) -> str | None:
    """None if ``path`` is a complete token file of frame ``key``/``index`` of the run ``scene_meta``
    (header, size and metadata checked; not the checksum), else the reason it is not.
    ``require_full_history`` also refuses frames written after an approximate (``window``) resume replay."""
    try:
        meta = read_token_header(path)[0]
    except TokenCacheError as e:
        return str(e)
    diffs = frame_mismatches(meta, scene_meta, key, index)
    if require_full_history and meta.get("history", "full") != "full":
        diffs.append(f"history {meta.get('history')!r} != 'full' (written after a windowed resume replay)")
    return f"{path}: {'; '.join(diffs)}" if diffs else None


class TokenCache:
    """Reader of a ``<scene>/tokens`` folder.

    ``keys`` (frame keys in order), ``meta`` (the scene-level meta.json), ``layers``, ``grid`` (h, w),
    ``patch_start_idx``, ``token_dim``, ``backbone_id``, ``crop`` (CropInfo dict), ``load(key)`` ->
    list of (P, 2C) memory-mapped tensors in ``layers`` order, ``validate(...)``.
    """

    def __init__(self, tokens_dir: str | os.PathLike) -> None:
        self.dir = Path(tokens_dir)
        meta_path = self.dir / META_FILE
        if not meta_path.is_file():
            raise TokenCacheError(f"{meta_path}: missing, so {self.dir} is not a token cache; {EXTRACT_HINT}")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise TokenCacheError(f"{meta_path}: corrupted JSON; {EXTRACT_HINT}") from None
        if self.meta.get("format") != FORMAT or self.meta.get("version") not in READ_VERSIONS:
            raise TokenCacheError(f"{meta_path}: format {self.meta.get('format')!r} version "
                                  f"{self.meta.get('version')!r}, expected {FORMAT!r} version "
                                  f"{' or '.join(map(str, READ_VERSIONS))}; {EXTRACT_HINT}")
        if self.meta.get("version") != format_version(self.meta.get("dtype")):
            raise TokenCacheError(f"{meta_path}: format version {self.meta.get('version')} does not go with "
                                  f"storage dtype {self.meta.get('dtype')!r}; {EXTRACT_HINT}")
        self.keys: list[str] = [f["key"] for f in self.meta.get("frames", [])]
        self._index = {k: i for i, k in enumerate(self.keys)}

    # convenience accessors
    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.meta["grid"])

    @property
    def patch_start_idx(self) -> int:
        return int(self.meta["patch_start_idx"])

    @property
    def token_dim(self) -> int:
        return int(self.meta["token_dim"])

    @property
    def backbone_id(self) -> str:
        return str(self.meta["backbone"])

    @property
    def crop(self) -> dict[str, Any]:
        return dict(self.meta["crop"])

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete", False))

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def path(self, key: str) -> Path:
        return self.dir / f"{key}{SUFFIX}"

    def index_of(self, key: str) -> int:
        try:
            return self._index[key]
        except KeyError:
            raise TokenCacheError(f"{self.dir}: no frame {key!r} in {META_FILE}") from None

    def _check_frame_meta(self, key: str, meta: dict[str, Any]) -> None:
        diffs = frame_mismatches(meta, self.meta, key, self.index_of(key))
        if diffs:
            raise TokenCacheError(f"{self.path(key)}: does not match {self.dir / META_FILE}: {'; '.join(diffs)}. "
                                  f"The folder mixes runs; {EXTRACT_HINT}")

    def load(self, key: str, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
             verify: bool = False) -> list[torch.Tensor]:
        """Tokens of frame ``key``: one (P, 2C) float tensor per layer in ``self.layers`` order.

        fp16/bf16/fp32 caches: without ``device``/``dtype`` the tensors are memory-mapped (copy-on-write) CPU
        views of the file. int8 caches: de-quantised on the fly from the memory-mapped int8 bytes into new
        float32 tensors (or ``dtype``; on ``device``, after moving the int8 bytes there).
        """
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"{self.dir}: tokens are read as floating-point tensors, not {dtype} (int8 storage "
                             "is de-quantised on read; load_quantized_token_file gives its stored bytes)")
        tensors, meta = load_token_file(self.path(key), verify=verify, dtype=dtype, device=device)
        self._check_frame_meta(key, meta)
        return tensors

    def locate(self, key: str) -> TokenSlices | None:
        """Where frame ``key``'s layers lie in its file (header and frame metadata checked as :meth:`load` checks
        them), for reading them straight into a batch; None for int8 caches, which :meth:`load` de-quantises."""
        path = self.path(key)
        meta, header, data_start = read_token_header(path)
        self._check_frame_meta(key, meta)
        if meta.get("dtype") == "int8":
            return None
        infos = [header[layer_name(li)] for li in meta["layers"]]
        if len({(i["dtype"], tuple(i["shape"])) for i in infos}) != 1 or len(infos[0]["shape"]) != 2:
            raise TokenCacheError(f"{path}: layers of different types or shapes "
                                  f"({sorted({(i['dtype'], tuple(i['shape'])) for i in infos})}); {EXTRACT_HINT}")
        return TokenSlices(path, tuple(data_start + int(i["data_offsets"][0]) for i in infos),
                           tuple(int(x) for x in infos[0]["shape"]), _ST_DTYPES[infos[0]["dtype"]])

    def frame_meta(self, key: str) -> dict[str, Any]:
        """The metadata stored in frame ``key``'s file (header only)."""
        return read_token_header(self.path(key))[0]

    def validate(self, *, backbone: str | None = None, layers: Sequence[int] | None = None,
                 token_dim: int | None = None, grid: Sequence[int] | None = None,
                 patch_start_idx: int | None = None, patch_size: int | None = None,
                 keys: Sequence[str] | None = None, check_files: bool = True, deep: bool = False) -> None:
        """Refuse (TokenCacheError naming the file and the fix) a cache that does not match what the consumer
        expects. Only the arguments given are compared. ``check_files`` also parses every frame file's header
        (cheap: size, tensors, metadata); ``deep`` additionally verifies every checksum (reads all data).
        ``keys`` restricts the frame files checked (and requires them to be present).
        """
        expected = {"backbone": backbone, "layers": None if layers is None else [int(x) for x in layers],
                    "token_dim": token_dim, "grid": None if grid is None else [int(x) for x in grid],
                    "patch_start_idx": patch_start_idx, "patch_size": patch_size}
        diffs = describe_mismatch(self.meta, expected)
        if diffs:
            raise TokenCacheError(f"{self.dir / META_FILE}: token cache does not match the decoder: "
                                  f"{'; '.join(diffs)}. Fix: {EXTRACT_HINT} (e.g. --layers "
                                  f"{' '.join(map(str, expected['layers'] or self.layers))}), or point the "
                                  f"decoder at a matching tokens folder")
        if not self.complete and keys is None:
            raise TokenCacheError(f"{self.dir}: extraction did not finish (meta.json says complete=false); "
                                  f"re-run the extraction command to resume it")
        if not check_files:
            return
        for key in (self.keys if keys is None else keys):
            if deep:
                meta = verify_token_file(self.path(key))
            else:
                meta = read_token_header(self.path(key))[0]
            self._check_frame_meta(key, meta)


def write_scene_meta(tokens_dir: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write ``tokens_dir/meta.json`` atomically with the format fields filled in."""
    full = dict(meta)
    full.update(format=FORMAT, version=format_version(meta.get("dtype")))
    save_json_atomic(json.loads(canonical_json(full)), Path(tokens_dir) / META_FILE)
