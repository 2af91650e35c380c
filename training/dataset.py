"""Multi-scene training data: cached geometry tokens + frames + language targets, aligned by the crop.

For every frame of every scene a sample holds

- ``tokens``: the cached layers, list of (P, 2C) tensors (memory-mapped, storage dtype, e.g. fp16);
- ``frame``: the network input (3, h, w) in [0, 1], produced with the cache's own crop/resize;
- ``lang_target``: (3, k, h, w) float32 features of levels small/middle/large, gathered per pixel from
  ``<features_subdir>/<key>_f.npy`` (N, k) with the indices of ``<key>_s.npy`` (4, H, W) levels 1..3;
- ``lang_mask``: (3, h, w) bool, index != -1;
- optionally ``video_target`` (v, h, w) + ``video_mask`` (h, w) from the time-sensitive targets.

Targets live at the original frame resolution (H, W); they are brought onto the network grid through the
cache's :class:`preprocess.frames.CropInfo` (nearest neighbour, pixels outside the original frame are
masked), so a cropped prediction is never stretched over the uncropped frame.

Split: the annotated evaluation frames (``annotations/train/_annotations.coco.json`` file-name prefixes,
else ``gt/names.json`` ``eval_frames``) are held out for the validation loss unless
``train_on_eval_frames`` (the published behaviour: train on everything).

Construction runs a pre-flight check over the whole dataset and raises one :class:`DatasetError`
listing every problem found (missing token files, mismatched cache metadata, missing or misshapen targets).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from eval.annotations import frame_index_from_file_name
from preprocess.frames import CropInfo, FramePreprocessor, FrameRef, list_frames, read_frame
from preprocess.token_cache import TokenCache, TokenCacheError
from utils.io import load_npy

logger = logging.getLogger(__name__)

DEFAULT_FEATURES = "clip_features-language_features_dim3"
DEFAULT_VIDEO = "video_features-language_features_dim6"


class DatasetError(ValueError):
    """The training data failed the pre-flight check; the message lists every problem."""


@dataclass
class _Scene:
    root: Path
    cache: TokenCache
    frames: list[FrameRef]
    crop: CropInfo
    preprocessor: FramePreprocessor
    eval_frames: set[int]
    grid_yx: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (oy, ox, valid) on the input grid


@dataclass
class _Item:
    scene: int
    ref: FrameRef


def eval_frame_indices(scene: str | os.PathLike) -> set[int] | None:
    """0-based indices of a scene's annotated evaluation frames, or None when nothing says which they are.

    Read from the COCO annotations (frame index = ``int(file_name.split('_')[0]) - 1``), else from the
    synthetic ``gt/names.json`` ``eval_frames``.
    """
    scene = Path(scene)
    coco = scene / "annotations" / "train" / "_annotations.coco.json"
    if coco.is_file():
        data = json.loads(coco.read_text())
        try:  # the evaluator's reading of COCO file names, so the held-out frames are exactly the scored ones
            return {frame_index_from_file_name(str(img["file_name"])) for img in data.get("images", [])}
        except ValueError as e:
            raise DatasetError(f"{coco}: {e}") from None
    names = scene / "gt" / "names.json"
    if names.is_file():
        data = json.loads(names.read_text())
        if "eval_frames" in data:
            return {int(i) for i in data["eval_frames"]}
    return None


def expand_scenes(paths: Sequence[str | os.PathLike], tokens_subdir: str = "tokens") -> list[Path]:
    """Scene folders (those with a ``tokens_subdir``) from ``paths``: scenes themselves or roots of scenes."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / tokens_subdir).is_dir():
            out.append(p)
        elif p.is_dir() and (subs := sorted(s for s in p.iterdir() if (s / tokens_subdir).is_dir())):
            out.extend(subs)
        else:
            raise DatasetError(f"{p}: neither a scene folder (no {tokens_subdir}/ inside) nor a folder of scenes; "
                               f"extract tokens first with `python -m preprocess.extract_tokens {p}`")
    return out


def _npy_shape(path: Path) -> tuple[int, ...]:
    return tuple(load_npy(path, mmap=True).shape)


def input_grid_to_original(crop: CropInfo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each network-input pixel, the nearest original pixel: (oy, ox, valid), each (h, w)."""
    h, w = crop.input_hw
    ys, xs = np.mgrid[0:h, 0:w]
    xy = np.stack([xs, ys], axis=-1).astype(np.float64)
    o = crop.input_to_original_xy(xy)
    H, W = crop.orig_hw
    ox = np.floor(o[..., 0] + 0.5).astype(np.int64)
    oy = np.floor(o[..., 1] + 0.5).astype(np.int64)
    valid = (ox >= 0) & (ox < W) & (oy >= 0) & (oy < H)
    return np.clip(oy, 0, H - 1), np.clip(ox, 0, W - 1), valid


class SceneDataset(Dataset):
    """All frames of several scenes; see the module docstring for the sample layout."""

    def __init__(self, scenes: Sequence[str | os.PathLike], tokens_subdir: str = "tokens",
                 features_subdir: str = DEFAULT_FEATURES, video_subdir: str | None = DEFAULT_VIDEO,
                 train_on_eval_frames: bool = False, cache_in_memory: bool = False) -> None:
        self.features_subdir = features_subdir
        self.train_on_eval_frames = train_on_eval_frames
        self.cache_in_memory = cache_in_memory
        self._memory: dict[int, dict[str, Any]] = {}
        self.scenes: list[_Scene] = []
        self.items: list[_Item] = []
        problems: list[str] = []
        roots = expand_scenes(scenes, tokens_subdir)
        for root in roots:
            self._add_scene(root, tokens_subdir, problems)
        if not problems and not self.scenes:
            problems.append("no scenes given")
        # consistency across scenes
        infos = {s.root: (s.cache.layers, s.cache.token_dim, s.cache.patch_start_idx,
                          int(s.cache.meta.get("patch_size", 14))) for s in self.scenes}
        if len(set(map(repr, infos.values()))) > 1:
            problems.append("scenes were extracted with different settings (layers, token dim, patch_start_idx, "
                            "patch size): " + "; ".join(f"{r}: {v}" for r, v in infos.items())
                            + " -- re-extract them with the same backbone settings")
        lang_dims, video_dims = set(), set()
        self.video_subdir = video_subdir
        if video_subdir and not all((s.root / video_subdir).is_dir() for s in self.scenes):
            if any((s.root / video_subdir).is_dir() for s in self.scenes):
                logger.warning("only some scenes have %s/; the time-sensitive head is not trained", video_subdir)
            self.video_subdir = None
        for item in self.items:
            scene = self.scenes[item.scene]
            H, W = scene.crop.orig_hw
            key = item.ref.key
            subs = [(features_subdir, 4, lang_dims)]
            if self.video_subdir:
                subs.append((self.video_subdir, 1, video_dims))
            for sub, n_levels, dims in subs:
                s_path, f_path = scene.root / sub / f"{key}_s.npy", scene.root / sub / f"{key}_f.npy"
                if not s_path.is_file() or not f_path.is_file():
                    missing = [p.name for p in (s_path, f_path) if not p.is_file()]
                    problems.append(f"{scene.root / sub}: missing {', '.join(missing)}")
                    continue
                try:
                    s_shape, f_shape = _npy_shape(s_path), _npy_shape(f_path)
                except ValueError as e:
                    problems.append(f"{s_path.parent}/{key}_*.npy: unreadable ({e})")
                    continue
                if len(s_shape) != 3 or s_shape[0] < n_levels or s_shape[1:] != (H, W):
                    problems.append(f"{s_path}: shape {s_shape}, expected ({n_levels}, {H}, {W}) (levels x frame size)")
                if len(f_shape) != 2:
                    problems.append(f"{f_path}: shape {f_shape}, expected (N, k) feature rows")
                else:
                    dims.add(f_shape[1])
        if len(lang_dims) > 1:
            problems.append(f"language targets have different dimensions {sorted(lang_dims)} across frames; "
                            "encode them all with one autoencoder")
        if len(video_dims) > 1:
            problems.append(f"video targets have different dimensions {sorted(video_dims)} across frames")
        if problems:
            shown = problems[:50]
            more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
            raise DatasetError(f"training data check failed ({len(problems)} problem(s)):\n  "
                               + "\n  ".join(shown) + more)
        self.lang_dim = lang_dims.pop() if lang_dims else 0
        self.video_dim = video_dims.pop() if video_dims else 0
        c = self.scenes[0].cache
        self.patch_start_idx = c.patch_start_idx
        self.token_info = {"dim": c.token_dim, "layers": c.layers, "patch_start_idx": c.patch_start_idx,
                           "patch_size": int(c.meta.get("patch_size", 14)), "backbone": c.meta.get("backbone")}

    def _add_scene(self, root: Path, tokens_subdir: str, problems: list[str]) -> None:
        try:
            cache = TokenCache(root / tokens_subdir)
        except TokenCacheError as e:
            problems.append(str(e))
            return
        try:
            frames = list_frames(root)
        except (FileNotFoundError, ValueError) as e:
            problems.append(str(e))
            return
        try:
            crop = CropInfo.from_dict(cache.crop)
        except (KeyError, TypeError) as e:
            problems.append(f"{cache.dir}/meta.json: no usable crop metadata ({e}); re-extract the tokens")
            return
        patch = int(cache.meta.get("patch_size", 14))
        pre = FramePreprocessor(target_width=crop.input_hw[1], mode=crop.mode, patch_size=patch)
        if pre.plan(crop.orig_hw) != crop:
            problems.append(f"{cache.dir}/meta.json: crop {crop.to_dict()} is not what the {crop.mode!r} "
                            f"preprocessing gives for {crop.orig_hw} frames; re-extract the tokens")
        grid = tuple(cache.grid)
        if (grid[0] * patch, grid[1] * patch) != tuple(crop.input_hw):
            problems.append(f"{cache.dir}/meta.json: grid {grid} x patch {patch} does not match the crop input "
                            f"size {crop.input_hw}")
        missing = [f.key for f in frames if f.key not in cache or not cache.path(f.key).is_file()]
        if missing:
            problems.append(f"{cache.dir}: {len(missing)} frame(s) have no token file (e.g. {missing[:5]}); "
                            f"run `python -m preprocess.extract_tokens {root}` (it resumes)")
        for f in frames:
            if f.key in missing:
                continue
            try:
                cache.validate(keys=[f.key])
            except TokenCacheError as e:
                problems.append(str(e))
            if not f.is_video:
                with Image.open(f.path) as im:
                    size = (im.height, im.width)
                if size != tuple(crop.orig_hw):
                    problems.append(f"{f.path}: frame is {size[1]}x{size[0]} but the token cache was made from "
                                    f"{crop.orig_hw[1]}x{crop.orig_hw[0]} frames")
        evals = eval_frame_indices(root)
        if evals is None:
            logger.warning("%s: no annotations/ or gt/names.json, so no frame is held out for validation", root)
            evals = set()
        self.scenes.append(_Scene(root=root, cache=cache, frames=frames, crop=crop, preprocessor=pre,
                                  eval_frames=evals))
        sid = len(self.scenes) - 1
        self.items.extend(_Item(scene=sid, ref=f) for f in frames)

    def __len__(self) -> int:
        return len(self.items)

    def is_eval_frame(self, i: int) -> bool:
        item = self.items[i]
        return item.ref.index in self.scenes[item.scene].eval_frames

    def split_indices(self) -> tuple[list[int], list[int]]:
        """(train indices, held-out indices). With ``train_on_eval_frames`` the eval frames are in both."""
        held = [i for i in range(len(self)) if self.is_eval_frame(i)]
        if self.train_on_eval_frames:
            return list(range(len(self))), held
        hs = set(held)
        return [i for i in range(len(self)) if i not in hs], held

    def groups(self, indices: Sequence[int]) -> list[list[int]]:
        """``indices`` grouped by network input size (only same-size frames can share a batch)."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i in indices:
            by_size.setdefault(tuple(self.scenes[self.items[i].scene].crop.input_hw), []).append(i)
        return [by_size[k] for k in sorted(by_size)]

    def _gather(self, scene: _Scene, sub: str, key: str, levels: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (features (L, k, h, w) float32, mask (L, h, w) bool) on the network input grid."""
        if scene.grid_yx is None:
            scene.grid_yx = input_grid_to_original(scene.crop)
        oy, ox, valid = scene.grid_yx
        s_path = scene.root / sub / f"{key}_s.npy"
        seg = load_npy(s_path)  # (levels, H, W), read whole: faster than fancy indexing a memmap
        n_lvl = len(range(*levels.indices(seg.shape[0])))
        flat = (oy * seg.shape[2] + ox).reshape(-1)
        idx = np.take(seg[levels].reshape(n_lvl, -1), flat, axis=1).astype(np.int64)  # (L, h*w)
        idx[:, ~valid.reshape(-1)] = -1
        feats = load_npy(scene.root / sub / f"{key}_f.npy")
        mask = idx >= 0
        if mask.any() and idx.max() >= feats.shape[0]:
            raise DatasetError(f"{s_path}: region index {idx.max()} but {key}_f.npy has only {feats.shape[0]} rows; "
                               "the _s/_f pair is inconsistent, regenerate the targets")
        feats = np.concatenate([np.asarray(feats, dtype=np.float32), np.zeros((1, feats.shape[1]), np.float32)])
        rows = np.take(feats, np.where(mask, idx, -1), axis=0)  # (L, h*w, k); -1 -> the zero row
        h, w = oy.shape
        rows = rows.transpose(0, 2, 1).reshape(n_lvl, -1, h, w)
        mask = mask.reshape(n_lvl, h, w)
        return torch.from_numpy(np.ascontiguousarray(rows)), torch.from_numpy(mask)

    def load_tokens(self, scene_index: int, key: str) -> list[torch.Tensor]:
        """The cached layers of frame ``key``: list of (P, 2C) memory-mapped tensors (storage dtype)."""
        return self.scenes[scene_index].cache.load(key)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i in self._memory:
            return self._memory[i]
        item = self.items[i]
        scene = self.scenes[item.scene]
        key = item.ref.key
        frame, _ = scene.preprocessor.prepare(read_frame(item.ref))
        lang, mask = self._gather(scene, self.features_subdir, key, slice(1, 4))
        sample: dict[str, Any] = {"tokens": self.load_tokens(item.scene, key), "frame": frame, "lang_target": lang,
                                  "lang_mask": mask, "key": key, "scene": item.scene, "index": i}
        if self.video_subdir:
            v, vm = self._gather(scene, self.video_subdir, key, slice(0, 1))
            sample["video_target"], sample["video_mask"] = v[0], vm[0]
        if self.cache_in_memory:
            sample["tokens"] = [t.clone() for t in sample["tokens"]]
            self._memory[i] = sample
        return sample


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples of one input size: tokens -> list of (B, P, 2C); tensors -> (B, ...); others -> lists."""
    out: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        if k == "tokens":
            out[k] = [torch.stack(layer) for layer in zip(*vals, strict=True)]
        elif torch.is_tensor(vals[0]):
            out[k] = torch.stack(vals)
        else:
            out[k] = vals
    return out
