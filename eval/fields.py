"""Feature-field readers for evaluation.

Two layouts, both exposed through :class:`FieldSource`:

* ours (written by inference): ``<out>/fields/<key>.safetensors`` with tensors ``small``, ``middle``,
  ``large`` (k, H, W) and optionally ``video`` (c, H, W); metadata ``frame_index`` (else the index is
  parsed from the key: HyperNeRF ``000001`` -> 0, Neu3D ``0000`` -> 0).
* 4D LangSplat renders: one folder per level, each ``[.../]renders_npy/<idx:05d>.npy`` (H, W, C), idx 0-based,
  plus an optional folder for the time-sensitive render. A render whose values are all strictly positive
  (rendered into [0, 1]) is mapped back with ``x * 2 - 1``.

Features stay in their stored dimension (k = 3, 6, 512, ...); decoding to the text-embedding dimension is a
callable ``decode(z (..., k)) -> (..., D)`` applied lazily by the evaluator in pixel chunks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from utils.io import load_npy

logger = logging.getLogger(__name__)

LEVELS: tuple[str, ...] = ("small", "middle", "large")
Decoder = Callable[[torch.Tensor], torch.Tensor]


class FieldSource:
    """Per-frame feature fields. ``semantic(i)`` -> (L, H, W, k); ``video(i)`` -> (H, W, c) or None."""

    levels: tuple[str, ...] = LEVELS

    def frame_indices(self) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def semantic(self, index: int) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def video(self, index: int) -> torch.Tensor | None:  # pragma: no cover - interface
        raise NotImplementedError

    def has_video(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def _missing(self, index: int, where: Path) -> KeyError:
        return KeyError(f"no field for frame index {index} in {where} (have {len(self.frame_indices())} frames); "
                        "run inference on every annotated frame (the whole sequence)")


def key_to_index(key: str, dataset: str = "hypernerf") -> int:
    """Frame key (file stem) -> 0-based index: trailing digits, minus 1 for HyperNeRF's 1-based names."""
    m = re.search(r"(\d+)$", key)
    if m is None:
        raise ValueError(f"cannot read a frame number from key {key!r}; write 'frame_index' into the field metadata")
    n = int(m.group(1))
    return n - 1 if dataset == "hypernerf" else n


class OurFields(FieldSource):
    """Fields written by our inference (``<out>/fields/<key>.safetensors``); ``root`` = ``<out>`` or the folder."""

    def __init__(self, root: str | Path, dataset: str = "hypernerf", levels: Sequence[str] = LEVELS) -> None:
        root = Path(root)
        self.root = root / "fields" if (root / "fields").is_dir() else root
        self.levels = tuple(levels)
        files = sorted(self.root.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors fields in {self.root}; run inference first "
                                    "(expected <out>/fields/<key>.safetensors)")
        self._files: dict[int, Path] = {}
        self._video = False
        for f in files:
            with safe_open(str(f), framework="pt") as sf:
                meta = sf.metadata() or {}
                keys = set(sf.keys())
            idx = int(meta["frame_index"]) if "frame_index" in meta else key_to_index(f.stem, dataset)
            missing = [lv for lv in self.levels if lv not in keys]
            if missing:
                raise ValueError(f"{f}: missing level tensors {missing} (has {sorted(keys)})")
            if idx in self._files:
                raise ValueError(f"{f} and {self._files[idx]} both hold frame index {idx}")
            self._files[idx] = f
            self._video = self._video or "video" in keys

    def frame_indices(self) -> list[int]:
        return sorted(self._files)

    def has_video(self) -> bool:
        return self._video

    def _load(self, index: int, names: Sequence[str]) -> list[torch.Tensor] | None:
        f = self._files.get(index)
        if f is None:
            raise self._missing(index, self.root)
        with safe_open(str(f), framework="pt") as sf:
            if any(n not in sf.keys() for n in names):
                return None
            return [sf.get_tensor(n) for n in names]

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
        raise FileNotFoundError(f"render folder not found: {d} (expected .../renders_npy/<idx:05d>.npy)")
    return d


def _load_render(path: Path) -> torch.Tensor:
    arr = np.asarray(load_npy(path), dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"{path}: expected (H, W, C), got shape {arr.shape}")
    if arr.min() > 0:
        arr = arr * 2.0 - 1.0
    return torch.from_numpy(arr)


class RendersNpyFields(FieldSource):
    """4D LangSplat render layout: ``level_dirs`` (one per level, small/middle/large order) + optional video dir."""

    def __init__(self, level_dirs: Sequence[str | Path], video_dir: str | Path | None = None,
                 levels: Sequence[str] = LEVELS) -> None:
        if len(level_dirs) != len(levels):
            raise ValueError(f"need one render folder per level {tuple(levels)}, got {len(level_dirs)}")
        self.levels = tuple(levels)
        self.dirs = [_renders_dir(d) for d in level_dirs]
        self.video_dir = _renders_dir(video_dir) if video_dir is not None else None
        sets = [{int(p.stem) for p in d.glob("*.npy") if p.stem.isdigit()} for d in self.dirs]
        common = set.intersection(*sets)
        if not common:
            raise FileNotFoundError(f"no common <idx:05d>.npy renders across {self.dirs}")
        self._indices = sorted(common)

    def frame_indices(self) -> list[int]:
        return list(self._indices)

    def has_video(self) -> bool:
        return self.video_dir is not None

    def semantic(self, index: int) -> torch.Tensor:
        paths = [d / f"{index:05d}.npy" for d in self.dirs]
        for p in paths:
            if not p.is_file():
                raise self._missing(index, p.parent)
        return torch.stack([_load_render(p) for p in paths])

    def video(self, index: int) -> torch.Tensor | None:
        if self.video_dir is None:
            return None
        p = self.video_dir / f"{index:05d}.npy"
        if not p.is_file():
            raise self._missing(index, self.video_dir)
        return _load_render(p)


def autoencoder_decoder(path: str | Path, device: str | torch.device = "cpu") -> Decoder:
    """``decode(z (..., k)) -> (..., 512)`` from a saved ``model.autoencoder.FeatureAutoencoder`` folder."""
    from model.autoencoder import FeatureAutoencoder  # lazy: separate owner

    ae = FeatureAutoencoder.load(path)
    ae = ae.to(device).eval()

    @torch.no_grad()
    def decode(z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        out = ae.decode(z.reshape(-1, z.shape[-1]).to(device, torch.float32))
        return out.reshape(*lead, out.shape[-1])

    return decode
