"""``python -m inference.motion``: dense optical flow and moving-object masks for a video.

    python -m inference.motion data/synthetic/demo/rgb/2x --out outputs/demo/motion
    python -m inference.motion clip.mp4 --out motion/ --geometry outputs/clip/geometry --save-flow --pictures

Writes into --out:
  moving.npz   masks (T, H, W) bool (True = moves on its own), prob (T, H, W) float16 moving probability,
               moving_fraction (T,) float32, keys (T,) of the frames as a unicode array
  flow.npz     (--save-flow) flow (T-1, H, W, 2) float32 [dx, dy] from frame f to f+1 (OpenCV DIS)
  timeline.json  per frame: key, fraction of moving pixels, moving (fraction > --min-fraction)
  moving/<key>.png  (--pictures) the frame with moving pixels tinted red

The camera's own motion is explained by the depth and cameras of --geometry when given (a still scene
re-projected), else by a RANSAC homography fitted to the flow (inference/tracking/motion.py).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from inference.outputs import read_depth
from inference.track import load_gray_video
from inference.tracking.flow import PRESETS, DenseFlow
from inference.tracking.lift import geometry_files
from inference.tracking.motion import MotionParams, geometry_flow, homography_flow, moving_probability
from preprocess.frames import iter_frames, list_frames
from utils.cli import UserError, add_logging_args, cli_main, setup_logging_from
from utils.io import atomic_path, save_json_atomic, save_npz_atomic

logger = logging.getLogger(__name__)


def _camera(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d, _ = read_depth(path, names=("depth", "extrinsics", "intrinsics"))
    depth = d["depth"].numpy()
    if tuple(depth.shape) != tuple(size):
        raise UserError(f"depth map {depth.shape} but frames {tuple(size)}", path,
                        "give the geometry computed for these frames (same resolution)")
    return depth, d["intrinsics"].numpy(), d["extrinsics"].numpy()


def moving_masks(gray: np.ndarray, params: MotionParams, depth_files: Sequence[Path] | None = None,
                 preset: str = "medium", progress: bool = True, flows_out: list | None = None
                 ) -> np.ndarray:
    """(T, H, W) uint8 grey video -> (T, H, W) float16 moving probability (see the module docstring)."""
    t_count = len(gray)
    dis = DenseFlow(preset)
    prob = np.zeros(gray.shape, np.float16)  # half the memory of float32 on long videos
    for f in tqdm(range(t_count), desc="moving masks", unit="frame", disable=not progress, leave=False):
        other = params.partner(f, t_count)
        flow = dis(gray[f], gray[other])
        if flows_out is not None and f + 1 < t_count:  # the saved flow is always from f to f + 1
            flows_out.append(flow if other == f + 1 else dis(gray[f], gray[f + 1]))
        if depth_files is not None:
            depth, K0, e0 = _camera(depth_files[f], gray.shape[1:])
            _, K1, e1 = _camera(depth_files[other], gray.shape[1:])
            cam = geometry_flow(depth, K0, e0, K1, e1)
        else:
            cam = homography_flow(flow, params)
        prob[f] = moving_probability(flow, cam, params)
    return prob


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inference.motion", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a frames folder (or scene folder) or a video file")
    p.add_argument("--out", required=True, help="output folder (moving.npz, timeline.json, ...)")
    p.add_argument("--geometry", default=None,
                   help="geometry folder (depth + cameras) explaining the camera's motion; default: a RANSAC "
                        "homography per frame pair")
    d = MotionParams()
    p.add_argument("--sigma", type=float, default=d.sigma,
                   help=f"flow residual (px) scale of the moving probability (default {d.sigma})")
    p.add_argument("--baseline", type=int, default=d.baseline,
                   help=f"compare frame f with frame f+N (f-N near the end): slow objects move N times as far "
                        f"for the same flow noise (default {d.baseline})")
    p.add_argument("--threshold", type=float, default=d.threshold,
                   help=f"moving when the probability exceeds this (default {d.threshold})")
    p.add_argument("--ransac", type=float, default=d.ransac,
                   help=f"RANSAC inlier threshold (px) of the homography (default {d.ransac})")
    p.add_argument("--flow-preset", choices=sorted(PRESETS), default="medium", help="OpenCV DIS preset")
    p.add_argument("--min-fraction", type=float, default=0.002,
                   help="a frame counts as 'moving' in timeline.json when more than this fraction of its pixels "
                        "moves (default 0.002)")
    p.add_argument("--save-flow", action="store_true", help="also write flow.npz (T-1 forward flows)")
    p.add_argument("--pictures", action="store_true", help="also write moving/<key>.png overlays")
    add_logging_args(p)
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    setup_logging_from(args)
    progress = not args.quiet
    gray, keys = load_gray_video(args.source, progress)
    if len(gray) < 2:
        raise UserError("the video has a single frame: there is no motion to measure", args.source,
                        "give a video of at least two frames")
    depth_files = geometry_files(args.geometry, keys) if args.geometry else None
    if depth_files is not None and len(depth_files) != len(gray):
        raise UserError(f"the geometry has {len(depth_files)} frames, the video {len(gray)}", args.geometry,
                        "give the geometry of this video")
    if args.baseline < 1:
        raise UserError(f"--baseline must be at least 1 frame, got {args.baseline}", None, "pass e.g. --baseline 3")
    params = MotionParams(sigma=args.sigma, threshold=args.threshold, ransac=args.ransac, baseline=args.baseline)
    flows: list | None = [] if args.save_flow else None
    prob = moving_masks(gray, params, depth_files, args.flow_preset, progress, flows)
    masks = prob > params.threshold
    frac = masks.reshape(len(masks), -1).mean(axis=1).astype(np.float32)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_npz_atomic({"masks": masks, "prob": prob.astype(np.float16), "moving_fraction": frac,
                     "keys": np.array(keys)}, out / "moving.npz", compress=True)
    if flows is not None:
        save_npz_atomic({"flow": np.stack(flows).astype(np.float32)}, out / "flow.npz", compress=True)
    timeline = {"method": "geometry" if depth_files else "homography", "sigma": params.sigma,
                "baseline": params.baseline,
                "threshold": params.threshold, "min_fraction": args.min_fraction,
                "frames": [{"key": k, "moving_fraction": float(v), "moving": bool(v > args.min_fraction)}
                           for k, v in zip(keys, frac, strict=True)]}
    save_json_atomic(timeline, out / "timeline.json")
    if args.pictures:
        for (ref, rgb), m in zip(iter_frames(list_frames(args.source)), masks, strict=True):
            tint = rgb.astype(np.float32)
            tint[m] = 0.5 * tint[m] + 0.5 * np.array([255, 0, 0])
            path = out / "moving" / f"{ref.key}.png"
            ok, png = cv2.imencode(".png", tint.astype(np.uint8)[:, :, ::-1])
            with atomic_path(path) as tmp:
                tmp.write_bytes(png.tobytes())
    moving = [k for k, v in zip(keys, frac, strict=True) if v > args.min_fraction]
    logger.info("%d of %d frames move (%s); wrote %s", len(moving), len(keys), timeline["method"], out)
    return {"masks": masks, "prob": prob, "timeline": timeline}


if __name__ == "__main__":
    main()
