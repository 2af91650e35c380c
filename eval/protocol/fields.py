"""Feature-field readers for evaluation.

Two layouts, both exposed through :class:`FieldSource`:

* ours (written by inference): ``<out>/fields/<key>.safetensors`` with tensors ``small``, ``middle``,
  ``large`` (k, H, W) and optionally ``video`` (c, H, W); metadata ``frame_index`` (else the index is
  parsed from the key: HyperNeRF ``000001`` -> 0, Neu3D ``0000`` -> 0).
* 4D LangSplat renders: one folder per level, each ``[.../]renders_npy/<idx:05d>.npy`` (H, W, C), idx 0-based,
  plus an optional folder for the time-sensitive render. As in the published ``eval.py``, a frame's three
  level renders are mapped back with ``x * 2 - 1`` together, and only when the minimum over all three is
  ``> 0`` (rendered into [0, 1]); the time-sensitive render is never mapped.

Features stay in their stored dimension (k = 3, 6, 512, ...); decoding to the text-embedding dimension is a
callable ``decode(z (..., k)) -> (..., D)`` applied lazily by the evaluator in pixel chunks.

Files that cannot be what they claim are refused with one :class:`FieldsError` naming the file: a missing or
empty folder, an unreadable ``.safetensors`` / ``.npy``, a render that is not (H, W, C), targets whose ``_s.npy``
is not (4, H, W) (video: (1, H, W) of the same H, W), whose ``_f.npy`` is not (N, D), or whose indices are not
-1 or a row of ``_f.npy``; an autoencoder whose latent size differs from the fields'.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from inference.outputs import read_fields, read_fields_header
from model.levels import LEVELS
from preprocess.annotations import key_to_index
from preprocess.target_format import (
    LEVEL_PLANES,
    SEMANTIC_PLANE_COUNT,
    VIDEO_PLANE_COUNT,
    feat_path,
    key_of,
    seg_files,
    seg_name,
    seg_path,
    target_problems,
)
from utils.cli import UserError
from utils.io import load_npy, read_json

logger = logging.getLogger(__name__)



class FieldsError(UserError, ValueError):
    """A field, render or target file that is not what the evaluator needs (the message names the file)."""


class FieldsMissingError(UserError, FileNotFoundError):
    """A field, render or target folder that is missing or holds no usable file."""


def _read_npy(path: Path) -> np.ndarray:
    """A .npy file (never unpickled); an unreadable one is a :class:`FieldsError` naming it."""
    try:
        return np.asarray(load_npy(path))
    except FileNotFoundError:
        raise FieldsMissingError("file not found", path, "check the folder") from None
    except UserError:  # load_npy's BadFileError already names the file
        raise
    except (ValueError, OSError, EOFError) as e:
        raise FieldsError(f"not a readable .npy file ({str(e).splitlines()[0][:120]})", path,
                          "write the file again") from None


class FieldSource:
    """Per-frame feature fields. ``semantic(i)`` -> (L, H, W, k); ``video(i)`` -> (H, W, c) or None."""

    levels: tuple[str, ...] = LEVELS
    location: str | Path = ""
    """Where the fields are read from (for messages)."""
    exact_size: bool = False
    """True when the fields must have the annotation size (targets): the evaluator then refuses another size
    instead of resizing."""

    def frame_file(self, index: int) -> str | Path:
        """The file holding frame ``index`` (for messages); the source's location by default."""
        return self.location

    def check(self, sizes: dict[int, tuple[int, int]]) -> None:
        """Refuse (one :class:`UserError` naming the file) frames of ``sizes`` (index -> annotated (H, W)) whose
        files are inconsistent, before any score is computed. Sources that read cheaply checked files override it."""

    def frame_indices(self) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def semantic(self, index: int) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def video(self, index: int) -> torch.Tensor | None:  # pragma: no cover - interface
        raise NotImplementedError

    def has_video(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def semantic_indexed(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Optional compact form of :meth:`semantic`: (L, H, W) int64 row indices (-1 = zero feature) + (N, k) rows.

        Sources whose pixels share few distinct features (targets, ground truth) return it so the evaluator
        scores N rows instead of L*H*W pixels; None = use :meth:`semantic`.
        """
        return None

    def video_indexed(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Optional compact form of :meth:`video`: (H, W) int64 row indices (-1 = zero) + (N, c) rows."""
        return None

    def _missing(self, index: int, where: Path) -> KeyError:
        return KeyError(f"no field for frame index {index} in {where} (have {len(self.frame_indices())} frames); "
                        "run inference on every annotated frame (the whole sequence)")


class OurFields(FieldSource):
    """Fields written by our inference (``<out>/fields/<key>.safetensors``); ``root`` = ``<out>`` or the folder.
    Files are read with the fields format's own reader (``inference.outputs``)."""

    def __init__(self, root: str | Path, dataset: str = "hypernerf", levels: Sequence[str] = LEVELS) -> None:
        root = Path(root)
        self.root = root / "fields" if (root / "fields").is_dir() else root
        self.location = self.root
        self.levels = tuple(levels)
        if not self.root.is_dir():
            raise FieldsMissingError("fields folder not found", self.root,
                                     "pass the inference output folder (<out> holding fields/<key>.safetensors)")
        files = sorted(self.root.glob("*.safetensors"))
        if not files:
            raise FieldsMissingError("no *.safetensors fields in the folder", self.root,
                                     "run inference first (expected <out>/fields/<key>.safetensors)")
        self._files: dict[int, Path] = {}
        self._video = False
        for f in files:
            try:
                keys, meta = read_fields_header(f)
                idx = int(meta["frame_index"]) if "frame_index" in meta else key_to_index(f.stem, dataset)
            except ValueError as e:  # (a damaged file is already one clear error of the fields reader)
                raise FieldsError(f"no frame index ({e})", f, "write 'frame_index' into the field metadata"
                                  ) from None
            missing = [lv for lv in self.levels if lv not in keys]
            if missing:
                raise FieldsError(f"missing level tensors {missing} (has {sorted(keys)})", f,
                                  "run inference again")
            if idx in self._files:
                raise FieldsError(f"this file and {self._files[idx].name} both hold frame index {idx}", f,
                                  "keep one field file per frame")
            self._files[idx] = f
            self._video = self._video or "video" in keys

    def frame_file(self, index: int) -> str | Path:
        return self._files.get(index, self.root)

    def frame_indices(self) -> list[int]:
        return sorted(self._files)

    def has_video(self) -> bool:
        return self._video

    def _load(self, index: int, names: Sequence[str]) -> list[torch.Tensor] | None:
        f = self._files.get(index)
        if f is None:
            raise self._missing(index, self.root)
        tensors, _ = read_fields(f, names=tuple(names))
        if any(n not in tensors for n in names):
            return None
        return [tensors[n] for n in names]

    def semantic(self, index: int) -> torch.Tensor:
        ts = self._load(index, self.levels)
        assert ts is not None
        return torch.stack([t.float().permute(1, 2, 0) for t in ts])

    def video(self, index: int) -> torch.Tensor | None:
        ts = self._load(index, ["video"])
        return None if ts is None else ts[0].float().permute(1, 2, 0)


def _renders_dir(d: str | Path) -> Path:
    d = Path(d)
    if (d / "renders_npy").is_dir():
        d = d / "renders_npy"
    if not d.is_dir():
        raise FieldsMissingError("render folder not found", d, "expected .../renders_npy/<idx:05d>.npy")
    return d


def _load_render(path: Path) -> torch.Tensor:
    """(H, W, C) float32 render, values as stored (no mapping)."""
    arr = _read_npy(path)
    if arr.ndim != 3 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise FieldsError(f"expected an (H, W, C) render, got shape {arr.shape} of {arr.dtype}", path,
                          "pass the renders_npy folders of the 4D LangSplat renderer")
    return torch.from_numpy(arr.astype(np.float32))


def unmap_level_renders(stack: torch.Tensor) -> torch.Tensor:
    """(L, H, W, C) level renders of one frame -> ``x * 2 - 1`` if their joint minimum is ``> 0``, else as is.

    The published rule (``if sem_feat.min() > 0: sem_feat = sem_feat * 2.0 - 1``) looks at the three levels
    together: one level touching 0 (or holding NaN) leaves all three unmapped.
    """
    if stack.numel() and bool(stack.min() > 0):
        return stack * 2.0 - 1.0
    return stack


class RendersNpyFields(FieldSource):
    """4D LangSplat render layout: ``level_dirs`` (one per level, small/middle/large order) + optional video dir.

    ``semantic(i)`` applies :func:`unmap_level_renders` to the frame's stacked levels; ``video(i)`` is raw.
    """

    def __init__(self, level_dirs: Sequence[str | Path], video_dir: str | Path | None = None,
                 levels: Sequence[str] = LEVELS) -> None:
        if len(level_dirs) != len(levels):
            raise ValueError(f"need one render folder per level {tuple(levels)}, got {len(level_dirs)}")
        self.levels = tuple(levels)
        self.dirs = [_renders_dir(d) for d in level_dirs]
        self.location = self.dirs[0]
        self.video_dir = _renders_dir(video_dir) if video_dir is not None else None
        sets = [{int(p.stem) for p in d.glob("*.npy") if p.stem.isdigit()} for d in self.dirs]
        common = set.intersection(*sets)
        if not common:
            raise FieldsMissingError(f"no common <idx:05d>.npy renders across {len(self.dirs)} level folders",
                                     self.dirs[0], "pass the renders_npy folders of the same scene")
        self._indices = sorted(common)

    def frame_file(self, index: int) -> str | Path:
        return self.dirs[0] / f"{index:05d}.npy"

    def frame_indices(self) -> list[int]:
        return list(self._indices)

    def has_video(self) -> bool:
        return self.video_dir is not None

    def semantic(self, index: int) -> torch.Tensor:
        paths = [d / f"{index:05d}.npy" for d in self.dirs]
        for p in paths:
            if not p.is_file():
                raise self._missing(index, p.parent)
        return unmap_level_renders(torch.stack([_load_render(p) for p in paths]))

    def video(self, index: int) -> torch.Tensor | None:
        if self.video_dir is None:
            return None
        p = self.video_dir / f"{index:05d}.npy"
        if not p.is_file():
            raise self._missing(index, self.video_dir)
        return _load_render(p)  # never mapped: the published code decodes the time-sensitive render as stored


def _gather_rows(index_map: np.ndarray, rows: torch.Tensor) -> torch.Tensor:
    """(H, W) int row indices (-1 = none) + (N, D) rows -> (H, W, D), zeros where -1 (or out of range)."""
    idx = torch.from_numpy(np.asarray(index_map).astype(np.int64))
    valid = (idx >= 0) & (idx < rows.shape[0])
    out = torch.zeros(*idx.shape, rows.shape[1], dtype=torch.float32)
    out[valid] = rows[idx[valid]].float()
    return out


def _clean_index(seg: np.ndarray, n_rows: int) -> torch.Tensor:
    """Float/int index map -> int64 tensor with -1 wherever there is no valid row."""
    idx = torch.from_numpy(np.rint(np.asarray(seg, dtype=np.float64)).astype(np.int64))
    return torch.where((idx >= 0) & (idx < n_rows), idx, torch.full_like(idx, -1))


class TargetFields(FieldSource):
    """The 4D LangSplat *targets* read as fields (an oracle / target-quality check through the evaluator).

    ``<scene>/<features>/<key>_s.npy`` (4, H, W) default|small|middle|large row indices (-1 none) and
    ``<key>_f.npy`` (N, D); levels 1..3 are gathered per pixel (zeros where -1). The optional video targets
    ``<scene>/<video>/<key>_s.npy`` (1, H, W) + ``<key>_f.npy`` give the time-sensitive field.
    Pass ``features="clip_features-language_features_dim3"`` plus a decoder to check autoencoded targets.
    """

    exact_size = True

    def __init__(self, scene_dir: str | Path, features: str = "clip_features", video: str | None = "video_features",
                 dataset: str = "hypernerf") -> None:
        scene_dir = Path(scene_dir)
        self.dir = scene_dir / features
        self.location = self.dir
        if not self.dir.is_dir():
            raise FieldsMissingError("target folder not found", self.dir, "run preprocess.extract_semantics first")
        self._keys: dict[int, str] = {}
        for p in seg_files(self.dir):
            key = key_of(p)
            try:
                idx = key_to_index(key, dataset)
            except ValueError as e:
                raise FieldsError(str(e).split(";")[0], p, "name target files <frame number>_s.npy") from None
            if idx in self._keys:
                raise FieldsError(f"{seg_name(self._keys[idx])} and {p.name} both hold frame {idx} (several cameras "
                                  "in one folder?)", self.dir, "keep only the test camera's targets (cam00)")
            self._keys[idx] = key
        if not self._keys:
            raise FieldsMissingError("no <key>_s.npy targets in the folder", self.dir,
                                     "run preprocess.extract_semantics first")
        vdir = scene_dir / video if video else None
        self.video_dir = vdir if vdir is not None and vdir.is_dir() else None

    def frame_file(self, index: int) -> str | Path:
        return seg_path(self.dir, self._keys[index]) if index in self._keys else self.dir

    def check(self, sizes: dict[int, tuple[int, int]]) -> None:
        for index, size in sizes.items():
            imap, _ = self._sem_ind(index)
            if tuple(imap.shape[-2:]) != tuple(size):
                raise FieldsError(f"targets of frame {index} are {imap.shape[-1]}x{imap.shape[-2]} but its annotation "
                                  f"is {size[1]}x{size[0]}", self.frame_file(index),
                                  "extract the targets from the annotated frames (same resolution)")
            self._vid_ind(index)

    @staticmethod
    def _read_pair(folder: Path, key: str, planes: int) -> tuple[np.ndarray, torch.Tensor]:
        """``<key>_s.npy`` (planes, H, W) and ``<key>_f.npy`` (N, D), checked: shapes, then the one validation of
        the target format (:func:`preprocess.target_format.target_problems`)."""
        s_path, f_path = seg_path(folder, key), feat_path(folder, key)
        seg, feats = _read_npy(s_path), _read_npy(f_path)
        if seg.ndim != 3 or seg.shape[0] != planes or 0 in seg.shape:
            raise FieldsError(f"expected ({planes}, H, W) region indices, got shape {seg.shape}", s_path,
                              "re-extract the targets with preprocess.extract_semantics")
        for path, what in target_problems(seg, feats, None, s_path, f_path):
            fix = ("the _s.npy and _f.npy files do not belong together; re-extract the targets" if path == s_path
                   else "re-extract the targets with preprocess.extract_semantics")
            raise FieldsError(what, path, fix)
        return seg.astype(np.float64), torch.from_numpy(feats.astype(np.float32))

    def frame_indices(self) -> list[int]:
        return sorted(self._keys)

    def has_video(self) -> bool:
        return self.video_dir is not None

    def _key(self, index: int) -> str:
        if index not in self._keys:
            raise self._missing(index, self.dir)
        return self._keys[index]

    def semantic_indexed(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._sem_ind(index)

    def video_indexed(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._vid_ind(index)

    def _sem_ind(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        seg, rows = self._read_pair(self.dir, self._key(index), SEMANTIC_PLANE_COUNT)
        return _clean_index(seg[LEVEL_PLANES], rows.shape[0]), rows

    def semantic(self, index: int) -> torch.Tensor:
        imap, rows = self._sem_ind(index)
        return torch.stack([_gather_rows(m.numpy(), rows) for m in imap])

    def _vid_ind(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.video_dir is None:
            return None
        key = self._key(index)
        seg, rows = self._read_pair(self.video_dir, key, VIDEO_PLANE_COUNT)
        sem_hw = tuple(_read_npy(seg_path(self.dir, key)).shape[-2:])
        if tuple(seg.shape[-2:]) != sem_hw:
            raise FieldsError(f"time-sensitive targets are {seg.shape[-1]}x{seg.shape[-2]} but the semantic targets "
                              f"of the frame are {sem_hw[1]}x{sem_hw[0]}", seg_path(self.video_dir, key),
                              "extract both from the same frames")
        return _clean_index(seg[0], rows.shape[0]), rows

    def video(self, index: int) -> torch.Tensor | None:
        ind = self._vid_ind(index)
        return None if ind is None else _gather_rows(ind[0].numpy(), ind[1])


class GroundTruthFields(FieldSource):
    """Oracle fields of a synthetic scene straight from its ground truth (no files written).

    Semantic level l at a pixel = ``encode_text(region name)`` of ``gt/labels/<key>.npy[l]`` (zeros for -1);
    the time-sensitive field = the embedding of the object's current state caption on its large-level pixels
    (``gt/names.json`` ``states``), zeros elsewhere. Embeddings are computed once per distinct text.
    """

    def __init__(self, scene_dir: str | Path, encode_text: Callable[[list[str]], torch.Tensor],
                 video_encode_text: Callable[[list[str]], torch.Tensor] | None = None) -> None:

        scene_dir = Path(scene_dir)
        names_path = scene_dir / "gt" / "names.json"
        self.location = scene_dir / "gt"
        if not names_path.is_file():
            raise FieldsMissingError("ground truth not found (--gt-oracle needs a synthetic scene)", names_path,
                                     "make one with python -m preprocess.make_synthetic")
        self.names = read_json(names_path)
        self.labels_dir = scene_dir / "gt" / "labels"
        self._keys = {key_to_index(p.stem): p.stem for p in self.labels_dir.glob("*.npy")}
        regions = sorted(self.names["regions"], key=lambda r: int(r["id"]))
        ids = [int(r["id"]) for r in regions]
        texts = [str(r["name"]) for r in regions]
        emb = torch.as_tensor(encode_text(texts)).detach().float().cpu()
        self.rows = torch.zeros(max(ids) + 1, emb.shape[1])
        self.rows[ids] = emb
        self.region_object = {int(r["id"]): str(r["object"]) for r in regions if r["level"] == "large"}
        self.states = self.names.get("states", {}) or {}
        captions = sorted({str(s["caption"]) for v in self.states.values() for s in v})
        venc = video_encode_text or encode_text
        cap_emb = torch.as_tensor(venc(captions)).detach().float().cpu() if captions else torch.zeros(0, 1)
        self.caption_rows = dict(zip(captions, cap_emb, strict=True))

    def frame_indices(self) -> list[int]:
        return sorted(self._keys)

    def has_video(self) -> bool:
        return bool(self.states)

    def _labels(self, index: int) -> np.ndarray:
        if index not in self._keys:
            raise self._missing(index, self.labels_dir)
        return np.asarray(load_npy(self.labels_dir / f"{self._keys[index]}.npy"))

    def semantic_indexed(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._sem_ind(index)

    def video_indexed(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._vid_ind(index)

    def _sem_ind(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _clean_index(self._labels(index), self.rows.shape[0]), self.rows

    def semantic(self, index: int) -> torch.Tensor:
        imap, rows = self._sem_ind(index)
        return torch.stack([_gather_rows(m.numpy(), rows) for m in imap])

    def _vid_ind(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.states:
            return None
        large = torch.from_numpy(self._labels(index)[2].astype(np.int64))
        captions = list(self.caption_rows)
        imap = torch.full_like(large, -1)
        for rid, obj in self.region_object.items():
            for st in self.states.get(obj, []):
                if any(lo <= index <= hi for lo, hi in st["intervals"]):
                    imap[large == rid] = captions.index(str(st["caption"]))
        return imap, torch.stack([self.caption_rows[c] for c in captions])

    def video(self, index: int) -> torch.Tensor | None:
        ind = self._vid_ind(index)
        return None if ind is None else _gather_rows(ind[0].numpy(), ind[1])
