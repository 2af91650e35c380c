"""Dataset layouts: which videos a path holds and where each one's outputs go.

A path may be a video file, a frame folder, a scene (HyperNeRF ``rgb/2x``; Neu3D ``camXX/images``; ``images``; a
TUM RGB-D / Bonn sequence ``rgb/`` + ``rgb.txt``; a Sintel sequence ``<Sintel>/training/{final,clean}/<seq>/``) or a
dataset root (a folder of scenes; for Sintel ``training/final`` or ``training/clean``). Each video is a :class:`Job`:
a name for logs and output folders, its frame source, and its token folder (``<scene>/tokens``,
``<scene>/camXX/tokens``, ``<video dir>/<stem>/tokens``, Sintel ``<Sintel>/training/tokens/<pass>/<seq>``).
Token extraction and inference over many videos both start here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from preprocess.frames import FrameSourceInvalid, FrameSourceMissing, is_video_file, resolve_frame_folder


@dataclass
class Job:
    """One video to extract: its name (for logs), its frames and where its tokens go."""

    name: str
    source: Path
    tokens_dir: Path


def _camera_dirs(scene: Path) -> list[Path]:
    return sorted(p for p in scene.iterdir() if p.is_dir() and p.name.startswith("cam") and (p / "images").is_dir())


def _has_images(folder: Path) -> bool:
    try:
        resolve_frame_folder(folder)
        return True
    except FileNotFoundError:
        return False


#: Sintel's render passes: ``<Sintel>/training/<pass>/<seq>/frame_0001.png``
SINTEL_PASSES = ("final", "clean")


def is_tum_sequence(scene: Path) -> bool:
    """A TUM RGB-D / Bonn sequence folder: ``rgb.txt`` and the ``rgb/`` frames it lists."""
    return (scene / "rgb.txt").is_file() and (scene / "rgb").is_dir()


def is_sintel_sequence(folder: Path) -> bool:
    """A Sintel sequence: a folder of frames directly inside a ``final/`` or ``clean/`` pass folder."""
    return folder.parent.name in SINTEL_PASSES and _has_own_images(folder)


def _has_own_images(folder: Path) -> bool:
    try:
        return resolve_frame_folder(folder) == folder
    except FileNotFoundError:
        return False


def sintel_job(seq: Path) -> Job:
    """A Sintel sequence's job: tokens beside the passes, ``<Sintel>/training/tokens/<pass>/<seq>``."""
    return Job(seq.name, seq, seq.parent.parent / "tokens" / seq.parent.name / seq.name)


def scene_jobs(scene: Path, cameras: Sequence[str] | None = None, frames_subdir: str = "rgb/2x") -> list[Job]:
    """Jobs of one scene folder: HyperNeRF (``<frames_subdir>`` -> ``<scene>/tokens``), a TUM RGB-D / Bonn sequence
    (``rgb/`` -> ``<scene>/tokens``), a Sintel sequence (``training/<pass>/<seq>`` -> ``training/tokens/<pass>/<seq>``),
    Neu3D (each ``camXX/images`` -> ``<scene>/camXX/tokens``, optionally only ``cameras``), or ``images/``."""
    if (scene / frames_subdir).is_dir():
        return [Job(scene.name, scene / frames_subdir, scene / "tokens")]
    if is_tum_sequence(scene):
        return [Job(scene.name, scene / "rgb", scene / "tokens")]
    if is_sintel_sequence(scene):
        return [sintel_job(scene)]
    cams = _camera_dirs(scene)
    if cams:
        if cameras:
            missing = sorted(set(cameras) - {c.name for c in cams})
            if missing:
                raise FrameSourceMissing(f"no camera folder(s) {missing} with images/ (found {[c.name for c in cams]})", scene,
                                "check the names given to --cameras")
            cams = [c for c in cams if c.name in set(cameras)]
        return [Job(f"{scene.name}/{c.name}", c / "images", c / "tokens") for c in cams]
    if (scene / "images").is_dir():
        return [Job(scene.name, scene / "images", scene / "tokens")]
    return []


def discover_jobs(source: str | os.PathLike, scenes: Sequence[str] | None = None,
                  cameras: Sequence[str] | None = None, out: str | os.PathLike | None = None,
                  frames_subdir: str = "rgb/2x") -> list[Job]:
    """Turn the CLI input into jobs.

    * a video file ``x/clip.mp4`` -> ``x/clip/tokens``;
    * a frame folder ``<scene>/rgb/2x`` -> ``<scene>/tokens``; ``<scene>/camXX/images`` -> ``<scene>/camXX/tokens``;
      a TUM / Bonn ``<seq>/rgb`` -> ``<seq>/tokens``; any other folder of images -> ``<folder>/tokens``;
    * a scene folder (HyperNeRF, Neu3D, TUM / Bonn, a Sintel sequence) -> see :func:`scene_jobs`;
    * a dataset root -> the jobs of each scene folder in it (``scenes`` selects and orders them).
    ``out`` replaces the tokens folder (only for a single job).
    """
    src = Path(source)
    if not src.exists():
        raise FrameSourceMissing("no such file or folder", src, "pass a video, a frame folder, a scene or a dataset root")
    is_root = False
    if src.is_file():
        if not is_video_file(src):
            raise FrameSourceInvalid("not a video file", src, "pass a video, a frame folder, a scene or a dataset root")
        jobs = [Job(src.stem, src, src.parent / src.stem / "tokens")]
    elif scene_jobs(src, cameras, frames_subdir):
        jobs = scene_jobs(src, cameras, frames_subdir)
    elif _has_images(src):
        folder = resolve_frame_folder(src)
        if folder.parent.name == "rgb":
            tokens = folder.parent.parent / "tokens"
        elif folder.name == "rgb" and is_tum_sequence(folder.parent):
            tokens = folder.parent / "tokens"
        elif folder.name == "images":
            tokens = folder.parent / "tokens"
        else:
            tokens = folder / "tokens"
        jobs = [Job(tokens.parent.name, folder, tokens)]
    else:
        is_root = True
        children = sorted(p for p in src.iterdir() if p.is_dir())
        if scenes:
            missing = [name for name in scenes if not (src / name).is_dir()]
            if missing:
                raise FrameSourceMissing(f"no scene folder(s) {missing}", src, "check the names given to --scenes")
            children = [src / name for name in scenes]
        jobs = [j for c in children for j in scene_jobs(c, cameras, frames_subdir)]
        if not jobs:
            raise FrameSourceMissing("no frames, video, scene (rgb/2x, camXX/images, images, TUM rgb/ + rgb.txt, Sintel "
                                     "training/final/<seq>) or dataset of scenes found", src,
                            "pass a video, a frame folder, a scene or a dataset root")
    if scenes and not is_root:
        raise FrameSourceInvalid("--scenes selects scenes of a dataset root, but this is itself a video or a scene", src,
                        "drop --scenes")
    if out is not None:
        if len(jobs) != 1:
            raise FrameSourceInvalid(f"--out needs a single video, but this gives {len(jobs)} videos", src, "drop --out")
        jobs[0].tokens_dir = Path(out)
    return jobs
