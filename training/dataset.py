"""Multi-scene training data: cached geometry tokens + frames + language targets, aligned by the crop.

For every frame of every scene a sample holds (compact; :mod:`training.targets` has the details)

- ``tokens``: the cached layers, list of (P, 2C) tensors (memory-mapped, storage dtype, e.g. fp16); with
  ``read_tokens_in_collate`` (the trainer's loader) where they lie in the file instead
  (:class:`preprocess.token_cache.TokenSlices`), and :func:`collate_samples` reads them straight into the batch:
  one copy from the page cache, no memory map to fault in;
- ``frame``: the network input (3, h, w) as uint8, produced with the cache's own crop/resize;
- ``lang_index``: (3, h, w) region indices of levels small/middle/large (``<features_subdir>/<key>_s.npy``
  levels 1..3) on the network grid, -1 = no region; ``lang_table``: (N, k) float32, ``<key>_f.npy``;
- optionally ``video_index`` (1, h, w) + ``video_table`` (M, v) from the time-sensitive targets.

:func:`collate_samples` stacks them; after :func:`~training.targets.batch_to_device`,
:func:`~training.targets.expand_targets` gives the loss its dense ``lang_target`` (B, 3, k, h, w) float32 +
``lang_mask`` (B, 3, h, w) bool (and ``video_target`` + ``video_mask``), gathered on the training device.

Targets live at the original frame resolution (H, W); they are brought onto the network grid through the
cache's :class:`preprocess.frames.CropInfo` (nearest neighbour, pixels outside the original frame are
masked), so a cropped prediction is never stretched over the uncropped frame.

Split: the annotated evaluation frames (``annotations/train/_annotations.coco.json`` file-name prefixes,
else ``gt/names.json`` ``eval_frames``) are held out for the validation loss unless
``train_on_eval_frames`` (the published behaviour: train on everything).

Construction runs a pre-flight check over the whole dataset and raises one :class:`DatasetError`
listing every problem found (missing, truncated or mismatched token files and cache metadata; missing or
misshapen targets, targets of another size than the frames, region indices beyond the feature rows, NaN/inf
in the targets; scenes whose caches were made with another backbone, settings or preprocessing). Token values are
checked for NaN/inf as they are read for training (:func:`check_finite_batch`): reading every token file up front
would cost a pass over the whole cache.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from preprocess.annotations import frame_index_from_file_name
from preprocess.crop import CropInfo, FramePreprocessor
from preprocess.frames import FrameRef, image_size, list_frames
from preprocess.target_format import (
    LEVEL_PLANES,
    SEMANTIC_PLANE_COUNT,
    VIDEO_PLANE_COUNT,
    VIDEO_PLANES,
    feat_name,
    feat_path,
    key_of,
    seg_name,
    seg_path,
    target_problems,
)
from preprocess.token_cache import EXTRACT_HINT, TokenCache, TokenCacheError, TokenSlices, read_token_header
from training.targets import (  # noqa: F401  (collate_samples, input_grid_to_original: re-exported)
    GridMap,
    batch_checks,
    collate_samples,
    input_grid_to_original,
    read_frame_uint8,
)
from utils.cli import UserError
from utils.io import load_npy, read_json

logger = logging.getLogger(__name__)

DEFAULT_FEATURES = "clip_features-language_features_dim3"
DEFAULT_VIDEO = "video_features-language_features_dim6"


class DatasetError(UserError, ValueError):
    """The training data failed a check; one line (``utils.cli`` convention) naming the file(s) and the fix."""

    @classmethod
    def of_problems(cls, problems: Sequence[str]) -> DatasetError:
        """One error for every problem of the pre-flight check (each ``<file>: <what>; <fix>``), on one line."""
        if len(problems) == 1:
            return cls(f"training data check failed (1 problem): {problems[0]}")
        shown = problems[:MAX_SHOWN]
        more = f" | ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        return cls(f"training data check failed ({len(problems)} problem(s)): " + " | ".join(shown) + more, None,
                   "fix each one as described, then re-run")


MAX_SHOWN = 20
TARGET_FIX = ("regenerate the targets (python -m preprocess.extract_semantics, then "
              "python -m preprocess.train_autoencoder)")


@dataclass
class _Scene:
    root: Path
    cache: TokenCache
    frames: list[FrameRef]
    crop: CropInfo
    preprocessor: FramePreprocessor
    eval_frames: set[int]
    grid: GridMap | None = None  # where the network grid reads the original-size targets (built on first use)


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
        data = read_json(coco, "fix or re-export the COCO annotations")
        try:  # the evaluator's reading of COCO file names, so the held-out frames are exactly the scored ones
            return {frame_index_from_file_name(str(img["file_name"])) for img in data.get("images", [])}
        except ValueError as e:
            raise DatasetError(f"unreadable evaluation frame names ({e})", coco,
                               "fix the COCO file names (<frame number>_...)") from None
    names = scene / "gt" / "names.json"
    if names.is_file():
        data = read_json(names)
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
            raise DatasetError(f"neither a scene folder (no {tokens_subdir}/ inside) nor a folder of scenes", p,
                               f"extract tokens first with `python -m preprocess.extract_tokens {p}`")
    return out


def _npy_shape(path: Path) -> tuple[int, ...]:
    return tuple(load_npy(path, mmap=True).shape)


def preprocess_of(cache: TokenCache) -> dict[str, Any]:
    """The frame preprocessing a token cache was extracted with: ``{"mode", "target_width"}`` from its
    ``meta.json`` (``mode`` / ``target_width``, written by ``preprocess.extract_tokens``), else from its ``crop``
    (the crop's mode; the input width, which is the target width of the ``resize``/``crop``/``pad`` modes).
    ``target_width`` is None for the modes that do not resize (``native``, ``original``)."""
    m = cache.meta
    crop = m.get("crop") if isinstance(m.get("crop"), dict) else {}
    mode = m.get("mode") or crop.get("mode")
    width = m.get("target_width")
    if width is None and mode in ("resize", "crop", "pad") and crop.get("input_hw"):
        width = int(crop["input_hw"][1])
    return {"mode": mode, "target_width": None if width is None or mode in ("native", "original") else int(width)}


def token_info_of(cache: TokenCache) -> dict[str, Any]:
    """What a decoder trained on ``cache`` depends on (recorded in every checkpoint's ``state.json``): the backbone
    (id and, for official weights, the checkpoint's sha256), the layers read, the token width, the number of
    special tokens, the patch size and the frame preprocessing (``preprocess``: :func:`preprocess_of`), which
    inference defaults to."""
    m = cache.meta
    info = {"dim": cache.token_dim, "layers": cache.layers, "patch_start_idx": cache.patch_start_idx,
            "patch_size": int(m.get("patch_size", 14)), "backbone": m.get("backbone"),
            "preprocess": preprocess_of(cache)}
    backbone = m.get("backbone_info")
    sha = backbone.get("sha256") if isinstance(backbone, dict) else None
    if sha:
        info["backbone_sha256"] = sha
    return info


def token_info_mismatches(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """How the token cache a decoder was trained on (``recorded``, from its ``state.json``) differs from
    ``current`` (:func:`token_info_of` of the cache read now); fields one side does not record are skipped."""
    names = {"backbone": "backbone", "backbone_sha256": "backbone checkpoint sha256", "layers": "layers",
             "dim": "token width", "patch_start_idx": "patch_start_idx", "patch_size": "patch size"}
    out = []
    for key, name in names.items():
        a, b = recorded.get(key), current.get(key)
        if a is None or b is None:
            continue
        if isinstance(a, (list, tuple)):
            a, b = [int(x) for x in a], [int(x) for x in b]
        if a != b:
            out.append(f"{name} {b!r} where the decoder was trained on {a!r}")
    return out


def check_target_values(s_path: Path, f_path: Path, levels: slice) -> list[str]:
    """Problems of one ``_s``/``_f`` pair's values in the ``levels`` planes training reads: the one validation of
    the target format (:func:`preprocess.target_format.target_problems`: finite float rows; every index finite, an
    integer, -1 or a row of ``_f``)."""
    try:
        feats = load_npy(f_path, mmap=True)
        seg = load_npy(s_path, mmap=True)
        found = target_problems(seg, feats, levels, s_path, f_path)
    except (ValueError, OSError) as e:
        return [f"{e}; {TARGET_FIX}" if isinstance(e, UserError) else  # load_npy named the file
                f"{s_path.parent}/{key_of(s_path)}_*.npy: unreadable ({e}); {TARGET_FIX}"]
    return [f"{path}: {what}; {TARGET_FIX}" for path, what in found]


def check_finite_batch(batch: dict[str, Any], ds: SceneDataset) -> None:
    """Raise :class:`DatasetError` naming the file when a (compact, collated) batch read for training holds NaN/inf
    tokens or targets, or a region index beyond its frame's feature rows (files changed after the pre-flight).
    One device sync when everything is fine; run it before :func:`~training.targets.expand_targets`."""
    checks = [torch.isfinite(t).all() for t in batch["tokens"]] + batch_checks(batch)
    if bool(torch.stack(checks).all()):
        return
    for b, index in enumerate(batch["index"]):
        item = ds.items[index]
        scene = ds.scenes[item.scene]
        if not all(bool(torch.isfinite(t[b]).all()) for t in batch["tokens"]):
            raise DatasetError("NaN or inf in the cached tokens", scene.cache.path(item.ref.key),
                               f"re-extract them with `python -m preprocess.extract_tokens {scene.root} "
                               "--overwrite` (fp16 storage overflows on a backbone whose tokens exceed 65504: "
                               "use --dtype bf16 or fp32)")
        for p, sub in (("lang", ds.features_subdir), ("video", ds.video_subdir)):
            if f"{p}_index" not in batch:
                continue
            one = {k: batch[k][b:b + 1] for k in (f"{p}_index", f"{p}_table", f"{p}_rows")}
            finite_table, *rest, in_range = batch_checks(one)
            if not bool(finite_table) or not all(bool(c) for c in rest):
                bad = feat_name(item.ref.key) if not bool(finite_table) else seg_name(item.ref.key)
                raise DatasetError("NaN or inf in the targets", scene.root / sub / bad, TARGET_FIX)
            if not bool(in_range):
                idx = one[f"{p}_index"]
                raise DatasetError(f"region index {int(idx.max().long())} but {feat_name(item.ref.key)} has "
                                   f"only {int(one[f'{p}_rows'][0])} rows (the _s/_f pair is inconsistent)",
                                   seg_path(scene.root / sub, item.ref.key), TARGET_FIX)
    raise DatasetError("NaN or inf in a training batch", None, "check the token cache and the targets")


class SceneDataset(Dataset):
    """All frames of several scenes; see the module docstring for the sample layout."""

    def __init__(self, scenes: Sequence[str | os.PathLike], tokens_subdir: str = "tokens",
                 features_subdir: str = DEFAULT_FEATURES, video_subdir: str | None = DEFAULT_VIDEO,
                 train_on_eval_frames: bool = False, cache_in_memory: bool = False,
                 read_tokens_in_collate: bool = False) -> None:
        self.features_subdir = features_subdir
        # samples hold where their tokens lie (TokenSlices) and collate_samples reads them into the batch
        self.read_tokens_in_collate = read_tokens_in_collate and not cache_in_memory
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
        infos = {s.root: (s.cache.meta.get("backbone"), s.cache.layers, s.cache.token_dim, s.cache.patch_start_idx,
                          int(s.cache.meta.get("patch_size", 14))) for s in self.scenes}
        if len(set(map(repr, infos.values()))) > 1:
            problems.append("scenes were extracted with different backbones or settings (backbone, layers, token "
                            "dim, patch_start_idx, patch size): " + ", ".join(f"{r}: {v}" for r, v in infos.items())
                            + "; re-extract them with one backbone and the same settings")
        preps = {s.root: preprocess_of(s.cache) for s in self.scenes}
        if len({(p["mode"], p["target_width"]) for p in preps.values()}) > 1:
            problems.append("scenes were extracted with different frame preprocessing (a decoder records one, "
                            "which inference defaults to): " + ", ".join(
                                f"{r}/{tokens_subdir}/meta.json: mode {p['mode']!r}, target width "
                                f"{p['target_width']}" for r, p in preps.items())
                            + "; re-extract them with one --mode and --target-width (python -m "
                            "preprocess.extract_tokens <scene> --mode M --target-width W --overwrite), or train "
                            "them in separate runs")
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
            subs = [(features_subdir, SEMANTIC_PLANE_COUNT, lang_dims)]
            if self.video_subdir:
                subs.append((self.video_subdir, VIDEO_PLANE_COUNT, video_dims))
            for sub, n_levels, dims in subs:
                s_path, f_path = seg_path(scene.root / sub, key), feat_path(scene.root / sub, key)
                if not s_path.is_file() or not f_path.is_file():
                    missing = [p.name for p in (s_path, f_path) if not p.is_file()]
                    problems.append(f"{scene.root / sub}: missing {', '.join(missing)}; {TARGET_FIX}")
                    continue
                try:
                    s_shape, f_shape = _npy_shape(s_path), _npy_shape(f_path)
                except ValueError as e:
                    problems.append(f"{e}; {TARGET_FIX}" if isinstance(e, UserError) else
                                    f"{s_path.parent}/{key}_*.npy: unreadable ({e}); {TARGET_FIX}")
                    continue
                bad_shape = False
                if len(s_shape) != 3 or s_shape[0] < n_levels or s_shape[1:] != (H, W):
                    problems.append(f"{s_path}: shape {s_shape}, expected ({n_levels}, {H}, {W}) (levels x frame "
                                    f"size {W}x{H}); {TARGET_FIX}")
                    bad_shape = True
                if len(f_shape) != 2:
                    problems.append(f"{f_path}: shape {f_shape}, expected (N, k) feature rows; {TARGET_FIX}")
                    bad_shape = True
                else:
                    dims.add(f_shape[1])
                if not bad_shape:
                    levels = LEVEL_PLANES if sub == features_subdir else VIDEO_PLANES
                    problems.extend(check_target_values(s_path, f_path, levels))
        if len(lang_dims) > 1:
            problems.append(f"language targets have different dimensions {sorted(lang_dims)} across frames; "
                            "encode them all with one autoencoder")
        if len(video_dims) > 1:
            problems.append(f"video targets have different dimensions {sorted(video_dims)} across frames; "
                            "encode them all with one autoencoder")
        if problems:
            raise DatasetError.of_problems(problems)
        self.lang_dim = lang_dims.pop() if lang_dims else 0
        self.video_dim = video_dims.pop() if video_dims else 0
        c = self.scenes[0].cache
        self.patch_start_idx = c.patch_start_idx
        self.token_info = token_info_of(c)

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
                            f"size {crop.input_hw}; re-extract the tokens")
        missing = [f.key for f in frames if f.key not in cache or not cache.path(f.key).is_file()]
        if missing:
            problems.append(f"{cache.dir}: {len(missing)} frame(s) have no token file (e.g. {missing[:5]}); "
                            f"run `python -m preprocess.extract_tokens {root}` (it resumes)")
        for f in frames:
            if f.key in missing:
                continue
            try:
                cache.validate(keys=[f.key])
                shapes = {tuple(t["shape"]) for t in read_token_header(cache.path(f.key))[1].values()}
                n_tok = cache.meta.get("num_tokens")
                if any(len(sh) != 2 or sh[1] != cache.token_dim or (n_tok is not None and sh[0] != n_tok)
                       for sh in shapes):
                    problems.append(f"{cache.path(f.key)}: tensors of shape {sorted(shapes)} but {cache.dir}/"
                                    f"meta.json says ({n_tok}, {cache.token_dim}) (tokens x width); "
                                    f"{EXTRACT_HINT}")
            except TokenCacheError as e:
                problems.append(str(e))
            if not f.is_video:
                try:
                    size = image_size(f.path)  # as displayed (EXIF orientation), as the frame reader reads it
                except OSError as e:
                    problems.append(f"{f.path}: unreadable image ({e}); replace the frame")
                    continue
                if size != tuple(crop.orig_hw):
                    problems.append(f"{f.path}: frame is {size[1]}x{size[0]} but the token cache was made from "
                                    f"{crop.orig_hw[1]}x{crop.orig_hw[0]} frames; re-extract the tokens of "
                                    f"these frames (python -m preprocess.extract_tokens {root} --overwrite)")
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

    def _targets(self, scene: _Scene, sub: str, key: str, levels: slice) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (index maps (L, h, w) on the network input grid, -1 = none; feature rows (N, k) float32)."""
        if scene.grid is None:
            scene.grid = GridMap.of(scene.crop)
        index = scene.grid.read(seg_path(scene.root / sub, key), levels)
        feats = load_npy(feat_path(scene.root / sub, key))
        return torch.from_numpy(index), torch.from_numpy(np.asarray(feats, dtype=np.float32))

    def load_tokens(self, scene_index: int, key: str) -> list[torch.Tensor] | TokenSlices:
        """The cached layers of frame ``key``: list of (P, 2C) memory-mapped tensors (storage dtype), or with
        ``read_tokens_in_collate`` where they lie in the file (int8 caches: the de-quantised tensors)."""
        cache = self.scenes[scene_index].cache
        if self.read_tokens_in_collate:
            return cache.locate(key) or cache.load(key)
        return cache.load(key)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i in self._memory:
            return self._memory[i]
        item = self.items[i]
        scene = self.scenes[item.scene]
        key = item.ref.key
        frame = read_frame_uint8(item.ref, scene.preprocessor)
        index, table = self._targets(scene, self.features_subdir, key, LEVEL_PLANES)
        sample: dict[str, Any] = {"tokens": self.load_tokens(item.scene, key), "frame": frame, "lang_index": index,
                                  "lang_table": table, "key": key, "scene": item.scene, "index": i}
        if self.video_subdir:
            sample["video_index"], sample["video_table"] = self._targets(scene, self.video_subdir, key, VIDEO_PLANES)
        if self.cache_in_memory:  # own copies, not views of the file mappings
            sample = {k: [t.clone() for t in v] if k == "tokens" else v.clone() if torch.is_tensor(v) else v
                      for k, v in sample.items()}
            self._memory[i] = sample
        return sample
