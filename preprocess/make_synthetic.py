"""Generate a small synthetic dynamic scene in real 3D, in the HyperNeRF layout, with exact ground truth.

Example (the default scene: 64 frames of 200x150, five objects, a few seconds on CPU)::

    python -m preprocess.make_synthetic --out data/synthetic/demo

A pinhole camera (vertical field of view ``--fov``) orbits a tabletop; the objects are ray-cast solids that move,
turn, roll, open and fill. Output (``<out>``; formats in ``docs/architecture.md`` §9):
- ``rgb/2x/000001.png ...``: the frames (1-based, 6 digits);
- ``annotations/train/_annotations.coco.json``: COCO polygons of every object (large level) on the held-out
  frames 2, 6, 10, ... (0-based; file_name "000003_png.rf.synthetic.jpg" -> frame int("000003") - 1);
- ``annotations/video_annotations.json``: ``{object: {state caption: [[l, r], ...]}}`` inclusive, 0-based;
- ``gt/names.json``: levels, regions (global ids), objects, state timeline, eval frames;
- ``gt/labels/000001.npy ...``: int32 (3, H, W) region id per pixel for small / middle / large (-1 none);
- ``gt/geometry/``: true depth and cameras in the layout of an inference output's ``geometry/`` (``depth/<key>
  .safetensors``, ``cameras.json``) plus ``normals/<key>.safetensors``;
- ``gt/camera/<key>.json``: the cameras in HyperNeRF's format;
- ``gt/motion/<key>.safetensors`` (frames 1..T-1): forward optical flow, scene flow, their occlusion mask and
  the moving mask from frame t to t + 1;
- ``gt/tracks.npz``: point tracks (TAP-Vid / TAPVid-3D keys);
- ``gt/frames.json``: per frame the camera centre, the states and each object's visible pixel count.

The same flags always give byte-identical files. Everything is written into a temporary folder beside
``<out>`` that is renamed at the end, so a failure never leaves a half-written scene.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from preprocess.geometry_files import camera_record, encode_meta, write_depth
from preprocess.synthetic.annotations import (
    coco_annotations_for_frame,
    coco_document,
    coco_image_entry,
    names_document,
)
from preprocess.synthetic.groundtruth import (
    hypernerf_camera,
    make_queries,
    motion,
    query_frames,
    track_frame,
)
from preprocess.synthetic.render import RenderedFrame, render_frame
from preprocess.synthetic.scene import MOVING_EPS, Scene, SyntheticConfig, SyntheticConfigError, build_scene
from utils.cli import add_logging_args, cli_main, setup_logging_from
from utils.io import atomic_path, save_json_atomic, save_npy_atomic, save_npz_atomic, save_safetensors_atomic

log = logging.getLogger(__name__)

#: the ``convention`` of ``gt/geometry/cameras.json`` (the predicted geometry's world is its first camera instead)
GT_CAMERA_CONVENTION = ("OpenCV: x right, y down, z forward; extrinsics are 3x4 [R|t] camera-from-world "
                        "(X_cam = R X_world + t); world = the table (metres, z up, table top at z = 0), GROUND "
                        "TRUTH of a synthetic scene; intrinsics for the stored frames, continuous pixel "
                        "coordinates (pixel centres at i+0.5)")

__all__ = ["generate_synthetic_scene", "check_output_dir", "main", "SyntheticConfig", "SyntheticConfigError"]


def check_output_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    """Return ``out`` as a Path, or raise if it cannot be (re)written.

    Raises FileExistsError when ``out`` is a non-empty folder and ``overwrite`` is False, and
    NotADirectoryError when it is a file.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise NotADirectoryError(f"{out} exists and is not a folder; choose another --out")
        if any(out.iterdir()) and not overwrite:
            raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it "
                                  "or choose another --out")
    return out


def _write_png(rgb: np.ndarray, path: Path) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"could not encode {path} as PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def _write_geometry(scene: Scene, t: int, frame: RenderedFrame, root: Path) -> None:
    key = scene.frame_keys[t]
    meta = {"frame_key": key, "frame_index": t, "ground_truth": True, "units": "metres"}
    valid = torch.from_numpy(frame.valid)
    write_depth(root / "gt" / "geometry" / "depth" / f"{key}.safetensors", torch.from_numpy(frame.depth),
                valid.float(), valid, scene.extrinsics(t), scene.intrinsics, meta)
    save_safetensors_atomic({"normals": torch.from_numpy(frame.normals)},
                            root / "gt" / "geometry" / "normals" / f"{key}.safetensors",
                            metadata=encode_meta({**meta, "frame": "camera (OpenCV)"}))
    save_json_atomic(hypernerf_camera(scene, t), root / "gt" / "camera" / f"{key}.json")


def _write_scene(config: SyntheticConfig, root: Path, progress: bool) -> dict[str, int]:
    """Render and write every file of the scene under ``root`` (an empty folder). Returns counts."""
    scene = build_scene(config)
    T = config.frames
    eval_frames = set(scene.eval_frames)
    queries = make_queries(scene, {q: render_frame(scene, q) for q in query_frames(T)})
    n = len(queries.query_points)
    tracks, tracks_world, tracks_camera = (np.zeros((n, T, 2), np.float32), np.zeros((n, T, 3), np.float32),
                                           np.zeros((n, T, 3), np.float32))
    occluded = np.zeros((n, T), bool)
    images, annotations, per_frame, cameras = [], [], [], []
    prev: RenderedFrame | None = None
    for t in tqdm(range(T), desc="synthetic frames", unit="frame", disable=not progress):
        key = scene.frame_keys[t]
        frame = render_frame(scene, t)
        _write_png(frame.rgb, root / "rgb" / "2x" / f"{key}.png")
        save_npy_atomic(frame.labels, root / "gt" / "labels" / f"{key}.npy")
        _write_geometry(scene, t, frame, root)
        cameras.append(camera_record(key, t, scene.extrinsics(t), scene.intrinsics, (config.height, config.width)))
        if prev is not None:
            m = motion(scene, t - 1, prev, frame)
            save_safetensors_atomic({k: torch.from_numpy(v) for k, v in m.items()},
                                    root / "gt" / "motion" / f"{scene.frame_keys[t - 1]}.safetensors",
                                    metadata=encode_meta({"frame_key": scene.frame_keys[t - 1], "next_key": key,
                                                          "frame_index": t - 1, "moving_eps_m": MOVING_EPS}))
        xy, occ, xyz, cam = track_frame(scene, t, queries, frame)
        tracks[:, t], occluded[:, t], tracks_world[:, t], tracks_camera[:, t] = xy, occ, xyz, cam
        large = frame.labels[2]
        per_frame.append({
            "frame": t,
            "key": key,
            "camera_centre": [round(float(v), 9) for v in scene.camera_centre(t)],
            "visible_pixels": {o.name: int((large == scene.region_id("large", o.name, o.name)).sum())
                               for o in scene.objects},
            "moving_pixels": None if prev is None else int(m["moving"].sum()),
            "states": {o.name: o.kind.states[scene.state_index(o, t)] for o in scene.objects if o.kind.states},
        })
        if t in eval_frames:
            image_id = len(images) + 1
            images.append(coco_image_entry(scene, image_id, t))
            annotations += coco_annotations_for_frame(scene, frame.labels, image_id, len(annotations) + 1)
        prev = frame
    save_json_atomic({"convention": GT_CAMERA_CONVENTION, "ground_truth": True, "frames": cameras},
                     root / "gt" / "geometry" / "cameras.json")
    save_npz_atomic({"query_points": queries.query_points, "tracks": tracks, "occluded": occluded,
                     "tracks_world": tracks_world, "tracks_camera": tracks_camera,
                     "image_size": np.array([config.height, config.width], dtype=np.int64)},
                    root / "gt" / "tracks.npz")
    save_json_atomic(coco_document(scene, images, annotations),
                     root / "annotations" / "train" / "_annotations.coco.json")
    save_json_atomic(scene.state_intervals(), root / "annotations" / "video_annotations.json")
    save_json_atomic(names_document(scene), root / "gt" / "names.json")
    save_json_atomic({"config": config.to_dict(), "frames": per_frame}, root / "gt" / "frames.json")
    return {"frames": config.frames, "eval_frames": len(images), "polygons": len(annotations),
            "regions": len(scene.regions), "tracks": n}


def generate_synthetic_scene(out: str | os.PathLike, config: SyntheticConfig | None = None,
                             overwrite: bool = False, progress: bool = True) -> Path:
    """Write the synthetic scene described by ``config`` to ``out`` (see the module docstring).

    The scene is built in a temporary folder beside ``out`` and renamed onto it at the end; on any error
    the temporary folder is removed and ``out`` is untouched. Raises SyntheticConfigError for bad settings
    and FileExistsError when ``out`` is non-empty and ``overwrite`` is False.
    """
    config = config or SyntheticConfig()
    config.validate()
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        counts = _write_scene(config, tmp, progress)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / "scene")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote synthetic scene %s: %s", out, counts)
    return out


def build_parser() -> argparse.ArgumentParser:
    d = SyntheticConfig()
    p = argparse.ArgumentParser(
        prog="python -m preprocess.make_synthetic",
        description="Generate a deterministic synthetic dynamic scene (HyperNeRF layout + exact ground truth).",
    )
    p.add_argument("--out", required=True, type=Path,
                   help="scene folder to create, e.g. data/synthetic/demo (must not exist or be empty)")
    p.add_argument("--frames", type=int, default=d.frames, help=f"number of frames (4..10000, default {d.frames})")
    p.add_argument("--width", type=int, default=d.width, help=f"frame width in pixels (32..4096, default {d.width})")
    p.add_argument("--height", type=int, default=d.height,
                   help=f"frame height in pixels (32..4096, default {d.height})")
    p.add_argument("--objects", type=int, default=d.objects,
                   help=f"number of objects besides the tablecloth (1..6, default {d.objects}); the first two "
                        "(a box that opens, a glass that fills) change state")
    p.add_argument("--fov", type=float, default=d.fov,
                   help=f"vertical field of view of the pinhole camera in degrees (20..90, default {d.fov:g}); "
                        "fx = fy = (height/2) / tan(fov/2), principal point at the image centre")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed; same seed = same bytes (default {d.seed})")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it already exists and is not empty")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_logging_args(p)
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for bad flags or an existing output)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging_from(args)
    config = SyntheticConfig(frames=args.frames, width=args.width, height=args.height,
                             objects=args.objects, seed=args.seed, fov=args.fov)
    try:
        out = generate_synthetic_scene(args.out, config, overwrite=args.overwrite, progress=not args.no_progress)
    except (SyntheticConfigError, FileExistsError, NotADirectoryError) as e:
        parser.error(str(e))
    print(f"synthetic scene written to {out} ({config.frames} frames, {config.width}x{config.height}, "
          f"{config.objects} objects, seed {config.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
