"""The inference output layout, its (atomic, resumable) writers and readers.

::

    <out>/meta.json                              run settings, frame keys, levels, shapes; ``run``: what makes
                                                 each frame (checked by a resumed run)
    <out>/autoencoder/                           copy of the autoencoder the fields decode with (when given)
    <out>/video_autoencoder/                     copy of the time-sensitive field's autoencoder (when given)
    <out>/fields/<key>.safetensors               small|middle|large (lang_dim, H, W) float32 at the ORIGINAL
                                                 frame resolution (+ video (6, H, W) with a time head),
                                                 valid (H, W) uint8 (1 = inside the network crop);
                                                 metadata: JSON-encoded strings frame_key, frame_index,
                                                 lang_dim, levels, autoencoder
    <out>/rgb/<key>.png                          decoder RGB reconstruction (original resolution)
    <out>/pca/<level>/<key>.png                  PCA colouring of each level's field
    <out>/depth/<key>.png                        predicted depth as a picture (inverse depth, turbo, per-frame
                                                 2-98 % range of the confident pixels)
    <out>/geometry/depth/<key>.safetensors       depth, conf, valid (H, W) + extrinsics (3, 4), intrinsics (3, 3)
    <out>/geometry/cameras.json                  {"convention": ..., "frames": [{key, index, height, width,
                                                 extrinsics 3x4 camera-from-world, intrinsics 3x3}]}
    <out>/geometry/points/<key>.ply              confidence-filtered points coloured by RGB
    <out>/geometry/fused.ply                     all frames' points (subsampled to a budget)
    <out>/videos/{rgb,pca_<level>}.mp4           optional

A frame counts as done when all its per-frame files exist; a rerun skips done frames (resume).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from model.levels import LEVELS  # noqa: F401  (re-exported: the fields' level names)
from model.safe_load import open_safetensors
from preprocess.geometry_files import (  # noqa: F401  (re-exported: the geometry format's home is lower down)
    CAMERA_CONVENTION,
    read_depth,
    write_depth,
)
from preprocess.geometry_files import decode_meta as _decode_meta
from preprocess.geometry_files import encode_meta as _encode_meta
from utils.io import file_problem, read_json, save_safetensors_atomic

logger = logging.getLogger(__name__)

#: the copy of the autoencoder inside an output folder (meta.json records it relative to the folder)
AUTOENCODER_DIR = "autoencoder"
VIDEO_AUTOENCODER_DIR = "video_autoencoder"

class OutputLayout:
    """Paths of one inference run rooted at ``root``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def meta(self) -> Path:
        return self.root / "meta.json"

    def fields(self, key: str) -> Path:
        return self.root / "fields" / f"{key}.safetensors"

    def rgb(self, key: str) -> Path:
        return self.root / "rgb" / f"{key}.png"

    def depth_png(self, key: str) -> Path:
        return self.root / "depth" / f"{key}.png"

    def pca(self, level: str, key: str) -> Path:
        return self.root / "pca" / level / f"{key}.png"

    def depth(self, key: str) -> Path:
        return self.root / "geometry" / "depth" / f"{key}.safetensors"

    def dynamic(self, key: str) -> Path:
        """PAGE-4D's dynamic mask of a frame (``write_dynamic``)."""
        return self.root / "geometry" / "dynamic" / f"{key}.safetensors"

    def points(self, key: str) -> Path:
        return self.root / "geometry" / "points" / f"{key}.ply"

    def holds_frames(self) -> bool:
        """Whether any frame has been written here (a fields or a depth file; a run that failed before its first
        frame leaves none)."""
        return any(any((self.root / sub).glob("*.safetensors")) for sub in ("fields", "geometry/depth"))

    @property
    def cameras(self) -> Path:
        return self.root / "geometry" / "cameras.json"

    @property
    def fused(self) -> Path:
        return self.root / "geometry" / "fused.ply"

    def autoencoder(self, key: str = AUTOENCODER_DIR) -> Path | None:
        """The autoencoder the fields decode with (``key="video_autoencoder"``: the time-sensitive one): meta.json's
        entry, resolved against this folder when relative (the copy inference keeps inside it); None when none is
        recorded."""
        if not self.meta.exists():
            return None
        recorded = read_json(self.meta).get(key)
        if not recorded:
            return None
        path = Path(recorded)
        return path if path.is_absolute() else self.root / path

    def video(self, name: str) -> Path:
        return self.root / "videos" / f"{name}.mp4"

    def frame_files(self, key: str, levels: tuple[str, ...] = LEVELS, geometry: bool = True,
                    rgb: bool = True, pca: bool = True, fields: bool = True) -> list[Path]:
        """Every per-frame file a finished frame has (the fields file is written last; ``fields`` False: a
        geometry-only output, whose frame is done when its geometry files are)."""
        files = []
        if rgb:
            files.append(self.rgb(key))
        if pca:
            files += [self.pca(level, key) for level in levels]
        if geometry:
            files += [self.depth(key), self.depth_png(key), self.points(key)]
        if fields:
            files.append(self.fields(key))
        return files

    def frame_done(self, key: str, **kwargs) -> bool:
        """True when every file of frame ``key`` is there and complete (``utils.io.file_problem``: a truncated or
        foreign file is not kept by a resumed run; the frame is written again)."""
        for p in self.frame_files(key, **kwargs):
            if not p.exists():
                return False
            problem = file_problem(p)
            if problem is not None:
                logger.warning("will rewrite frame %s: %s: %s", key, p, problem)
                return False
        return True

    def field_keys(self) -> list[str]:
        """Frame keys that have a fields file, in meta.json order when it exists, else sorted."""
        have = {p.stem for p in (self.root / "fields").glob("*.safetensors")}
        if self.meta.exists():
            order = [k for k in read_json(self.meta).get("frames", []) if k in have]
            if len(order) == len(have):
                return order
        return sorted(have)


def _open(path: Path):
    """One of our output files, opened with the project's safetensors reader (a damaged file is one clear error)."""
    return open_safetensors(path, "run inference again (it rewrites damaged frames with --overwrite) or remove "
                                  "the file")


def write_fields(path: str | os.PathLike, fields: dict[str, torch.Tensor], meta: dict,
                 valid: torch.Tensor | None = None) -> None:
    """Write one frame's fields: {level: (lang_dim, H, W)} float32 (+ ``valid`` (H, W) uint8).

    ``meta`` values are stored as JSON-encoded strings (safetensors metadata is str -> str).
    """
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in fields.items()}
    shapes = {tuple(v.shape[-2:]) for v in tensors.values()}
    if len(shapes) != 1:
        raise ValueError(f"fields for {path} have different spatial sizes {sorted(shapes)}")
    if valid is not None:
        tensors["valid"] = valid.to(torch.uint8).cpu().contiguous()
    save_safetensors_atomic(tensors, path, metadata=_encode_meta(meta))


def read_fields(path: str | os.PathLike, names: tuple[str, ...] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a fields file: ({name: tensor}, decoded metadata). ``names`` limits which tensors load."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"fields file {path} not found; run `python -m inference.run` first")
    with _open(path) as f:
        meta = _decode_meta(f.metadata())
        keys = [k for k in f.keys() if names is None or k in names]
        tensors = {k: f.get_tensor(k) for k in keys}
    return tensors, meta


def read_fields_header(path: str | os.PathLike) -> tuple[set[str], dict]:
    """(tensor names, decoded metadata) of a fields file, without reading any tensor."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"fields file {path} not found; run `python -m inference.run` first")
    with _open(path) as f:
        return set(f.keys()), _decode_meta(f.metadata())


def write_dynamic(path: str | os.PathLike, dynamic: torch.Tensor, valid: torch.Tensor, meta: dict) -> None:
    """Write PAGE-4D's dynamic mask on the original frame atomically: ``dynamic`` (H, W) float32 in
    (-0.5, 0.5) (the mask head's per-patch ``attn_value``: higher = more likely moving) and ``valid`` (H, W)."""
    save_safetensors_atomic({"dynamic": dynamic.detach().float().cpu(), "valid": valid.to(torch.uint8).cpu()},
                            path, metadata=_encode_meta(meta))
