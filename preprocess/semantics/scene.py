"""Scene access for semantic extraction: frames, images, synthetic ground truth, staged output folders."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.frames import orientation_of
from utils.cli import UserError
from utils.io import load_npy, npy_problem, save_json_atomic

logger = logging.getLogger(__name__)


class SemanticsInputError(UserError, ValueError):
    """Bad input (missing frames, unreadable image, masks of the wrong size, bad ground truth)."""


@dataclass(frozen=True)
class Frame:
    """One video frame: ``key`` (file stem, e.g. ``000001``), 0-based ``index``, ``path``, ``ref`` (FrameRef)."""

    key: str
    index: int
    path: Path
    ref: Any = None


def list_scene_frames(scene: str | Path, frames_dir: str | Path | None = None) -> list[Frame]:
    """Frames of a scene via ``preprocess.frames.list_frames`` (same keys and order as the token cache).

    ``frames_dir`` (a frame folder or a video file) overrides the scene's ``rgb/2x`` / ``images`` folder.
    """
    from preprocess.frames import list_frames

    src = Path(frames_dir) if frames_dir is not None else Path(scene)
    try:
        refs = list_frames(src)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise SemanticsInputError(f"no usable frames for scene {scene}: {exc} (HyperNeRF layout: "
                                  f"<scene>/rgb/2x/000001.png ..., or pass --frames-dir)") from exc
    return [Frame(r.key, r.index, Path(r.path), r) for r in refs]


def iter_rgb(frames: list[Frame]) -> Iterator[tuple[Frame, np.ndarray]]:
    """Yield ``(frame, uint8 (H, W, 3) RGB)`` in order (videos decoded sequentially); unreadable -> clear error."""
    from preprocess.frames import iter_frames

    it = iter_frames([f.ref for f in frames])
    for fr in frames:
        try:
            _, rgb = next(it)
        except UserError as exc:  # the frame reader's own one-line error (it names the file)
            raise SemanticsInputError(exc.what or str(exc), exc.file or fr.path,
                                      exc.fix or "replace or remove the frame") from None
        except OSError as exc:
            raise SemanticsInputError(f"frame {fr.key} cannot be read ({exc})", fr.path,
                                      "replace or remove the frame") from None
        yield fr, rgb


def image_hw(path: str | Path, decode: bool = False) -> tuple[int, int]:
    """(H, W) of an image file from its header (cheap); ``decode=True`` also decodes every pixel, so that a
    truncated file (whose header is intact) is refused too. Errors are one-line :class:`SemanticsInputError` s."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise SemanticsInputError("frame is missing", path, "restore the frame or remove it from the folder")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if orientation_of(im, path) in (5, 6, 7, 8):  # shown turned a quarter (as every reader reads it)
                w, h = h, w
            if decode:
                im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        what = "empty frame file" if path.stat().st_size == 0 else f"frame cannot be decoded as an image ({exc})"
        raise SemanticsInputError(what, path, "the file is empty, truncated or corrupted: replace or remove it"
                                  ) from None
    return h, w


# ---------------------------------------------------------------------- synthetic ground truth
@dataclass
class GroundTruth:
    """``<scene>/gt``: ``names.json`` and per-frame ``labels/<key>.npy`` int32 (3, H, W) (small|middle|large)."""

    root: Path
    regions: dict[int, dict]
    objects: list[str]
    states: dict[str, list[dict]]
    levels: list[str]

    @classmethod
    def load(cls, scene: str | Path) -> GroundTruth:
        root = Path(scene) / "gt"
        names = root / "names.json"
        if not names.is_file():
            raise SemanticsInputError(f"{names} is missing: oracle mode needs a synthetic scene's ground truth "
                                      f"(make one with `python -m preprocess.make_synthetic`), or use --mode clip")
        try:
            data = json.loads(names.read_text())
            regions = {int(r["id"]): dict(r) for r in data["regions"]}
            levels = list(data.get("levels", ["small", "middle", "large"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise SemanticsInputError(f"{names} is not a valid ground-truth file ({exc})") from exc
        if levels != ["small", "middle", "large"]:
            raise SemanticsInputError(f"{names}: levels must be ['small', 'middle', 'large'], got {levels}")
        for r in regions.values():
            if not isinstance(r.get("name"), str) or not r["name"]:
                raise SemanticsInputError(f"{names}: region {r.get('id')} has no name")
        objects = list(data.get("objects", sorted({r.get("object", r["name"]) for r in regions.values()})))
        return cls(root, regions, objects, dict(data.get("states", {})), levels)

    def labels_path(self, key: str) -> Path:
        return self.root / "labels" / f"{key}.npy"

    def labels(self, key: str, hw: tuple[int, int]) -> np.ndarray:
        """int64 (3, H, W) region ids for frame ``key``, validated against the frame size ``hw``."""
        path = self.labels_path(key)
        if not path.is_file():
            raise SemanticsInputError(f"ground-truth labels {path} are missing for frame {key}")
        lab = load_npy(path)
        if lab.shape != (3, *hw):
            raise SemanticsInputError(f"{path} has shape {lab.shape}, expected (3, {hw[0]}, {hw[1]}) to match the "
                                      f"frame; regenerate the ground truth")
        if not np.issubdtype(lab.dtype, np.integer):
            raise SemanticsInputError(f"{path} must hold integer region ids, got {lab.dtype}")
        lab = lab.astype(np.int64)
        unknown = set(np.unique(lab).tolist()) - set(self.regions) - {-1}
        if unknown:
            raise SemanticsInputError(f"{path} uses region ids {sorted(unknown)[:5]} not listed in names.json")
        return lab

    def caption(self, obj: str, frame_index: int) -> str:
        """The state caption of ``obj`` at 0-based ``frame_index`` (inclusive intervals), else the object name."""
        for st in self.states.get(obj, []):
            for lo, hi in st.get("intervals", []):
                if lo <= frame_index <= hi:
                    return st["caption"]
        return obj


# ---------------------------------------------------------------------- staged output folder
def remove_stale_temps(folder: str | Path, names: list[str] | None = None) -> list[Path]:
    """Remove the temporary files a killed run left in ``folder``: ``utils.io.atomic_path`` writes
    ``.<name>.<random>.tmp`` beside ``<name>``; ``names`` limits the clean-up to those targets (default: every
    ``.*.tmp`` file, for folders that only this program writes). Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pats = [f".{n}.*.tmp" for n in names] if names is not None else [".*.tmp"]
    gone = sorted({q for pat in pats for q in folder.glob(pat) if q.is_file()})
    for q in gone:
        q.unlink(missing_ok=True)
    if gone:
        logger.info("removed %d temporary file(s) of an interrupted run in %s", len(gone), folder)
    return gone


class OutputExistsError(UserError, FileExistsError):
    """An output folder exists and ``--overwrite`` was not given."""

    def __init__(self, path: str | Path) -> None:
        super().__init__("the output folder already exists", path, "pass --overwrite to replace it")


def finished_output(final: str | Path, config: dict, files: list[str]) -> bool:
    """True when ``final`` is a folder committed by an earlier run with the same settings: its ``meta.json`` holds
    every ``config`` entry with the same value and every name in ``files`` is there."""
    final = Path(final)
    try:
        meta = json.loads((final / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in json.loads(json.dumps(config)).items()):
        return False
    return all((final / n).is_file() for n in files)


class StagedOutput:
    """Write a folder as a whole: files go to ``.<name>.partial/`` beside it, renamed onto it at :meth:`commit`.

    ``config`` (JSON-able) is stored in the partial folder; a later run with the same config resumes
    (frames whose files are complete are skipped), otherwise the partial folder is cleared. An existing
    final folder is only replaced with ``overwrite=True``. :meth:`abort` removes the partial folder.
    """

    def __init__(self, final: str | Path, config: dict, overwrite: bool = False) -> None:
        self.final = Path(final)
        self.partial = self.final.parent / f".{self.final.name}.partial"
        self.config = config
        if self.final.exists() and not overwrite:
            raise OutputExistsError(self.final)
        cfg_file = self.partial / ".config.json"
        if self.partial.is_dir():
            try:
                same = json.loads(cfg_file.read_text()) == json.loads(json.dumps(config))
            except (OSError, json.JSONDecodeError):
                same = False
            if same:
                logger.info("resuming from %s", self.partial)
                remove_stale_temps(self.partial)
            else:
                shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True, exist_ok=True)
        save_json_atomic(config, cfg_file)

    def path(self, name: str) -> Path:
        return self.partial / name

    def has(self, *names: str) -> bool:
        """True when every file ``names`` of the partial folder is there and complete (a ``.npy`` is checked
        against its header: a truncated or foreign file is not kept; it is written again)."""
        for n in names:
            path = self.partial / n
            if not path.is_file():
                return False
            problem = npy_problem(path) if n.endswith(".npy") else None
            if problem is not None:
                logger.warning("will rewrite %s: %s", path, problem)
                return False
        return True

    def count(self, suffix: str) -> int:
        """How many files of the partial folder end with ``suffix`` (e.g. finished frames: ``_s.npy``)."""
        return sum(1 for _ in self.partial.glob(f"*{suffix}")) if self.partial.is_dir() else 0

    def commit(self) -> Path:
        (self.partial / ".config.json").unlink(missing_ok=True)
        old = self.final.parent / f".{self.final.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.partial, self.final)
        if old.exists():
            shutil.rmtree(old)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)
