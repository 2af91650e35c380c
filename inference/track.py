"""``python -m inference.track``: follow query points through a video (a frames folder or a video file).

    python -m inference.track data/synthetic/demo/rgb/2x --queries data/synthetic/demo/gt/tracks.npz --out pred.npz
    python -m inference.track clip.mp4 --grid 16 --out grid.npz --geometry outputs/clip/geometry
    python -m inference.track frames/ --queries q.npz --out head.npz --method trackhead --tokens scene/tokens \
        --backbone streamvggt

Queries: the ``query_points`` (N, 3) ``[t, y, x]`` of a TAP-Vid npz (e.g. a scene's ``gt/tracks.npz``), or
``--grid N``: an N x N grid of pixel centres on frame ``--grid-frame``. Output (inference/tracking/format.py):
``query_points``, ``tracks`` (N, T, 2) [x, y] pixels, ``occluded`` (N, T) bool, ``confidence`` (N, T), ``image_size``
[H, W], and with ``--geometry`` also ``tracks_world`` and ``tracks_camera`` (N, T, 3). Pixel convention: continuous
coordinates, pixel centres at i + 0.5 (as the geometry's intrinsics and TAP-Vid's raster).

Methods:
  lk         (default, weight-free) OpenCV pyramidal Lucas-Kanade forwards and backwards from each query frame,
             visibility from forward-backward consistency (inference/tracking/lk.py).
  trackhead  the StreamVGGT track head on the token cache (--tokens, else computed) with the head's weights from
             --backbone; a query at frame t is tracked on the clip reordered as [t, 0, 1, .., t-1, t+1, ..]
             (VGGT's demo scheme: the head tracks from the first frame it is given), in windows of --window
             frames that all start with frame t, so memory is bounded (inference/tracking/head.py).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inference.tracking.format import check_queries, read_queries, write_tracks
from inference.tracking.lift import geometry_files, lift_tracks
from inference.tracking.lk import LKParams, to_gray, track_lk
from inference.tracking.store import DEFAULT_MAX_BYTES, frame_store
from preprocess.frames import iter_frames, list_frames
from utils.cli import UserError, add_device_arg, add_logging_args, cli_main, setup_logging_from

logger = logging.getLogger(__name__)
METHODS = ("lk", "trackhead")


def load_gray_video(source: str | Path, progress: bool = True, max_bytes: int = DEFAULT_MAX_BYTES):
    """The grey frames (T, H, W) uint8 — an array, or for videos over ``max_bytes`` a disk-backed
    :class:`inference.tracking.store.DiskFrames` — and their keys; frames of different sizes are refused."""
    from tqdm import tqdm

    refs = list_frames(source)
    store, keys, size = None, [], None
    for i, (ref, rgb) in enumerate(tqdm(iter_frames(refs), total=len(refs), desc="reading frames", unit="frame",
                                        disable=not progress, leave=False)):
        if size is None:
            size = rgb.shape[:2]
            store = frame_store(len(refs), size, max_bytes)
        elif rgb.shape[:2] != size:
            raise UserError(f"frame {ref.key} is {rgb.shape[1]}x{rgb.shape[0]}, the first {size[1]}x{size[0]}",
                            ref.path, "give frames of one size")
        store[i] = to_gray([rgb])[0]
        keys.append(ref.key)
    return store, keys


def grid_queries(n: int, frame: int, image_size: tuple[int, int]) -> np.ndarray:
    """An n x n grid of pixel centres over the frame, at query frame ``frame`` -> (n², 3) [t, y, x]."""
    h, w = image_size
    ys = (np.arange(n) + 0.5) * h / n
    xs = (np.arange(n) + 0.5) * w / n
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return np.stack([np.full(n * n, float(frame)), yy.reshape(-1), xx.reshape(-1)], axis=1)


def check_queries_fit(q: np.ndarray, num_frames: int, image_size: tuple[int, int], path: str | None) -> None:
    """Refuse queries outside the video: a frame index outside [0, T) or a position outside the frame."""
    h, w = image_size
    t = np.round(q[:, 0])
    bad_t = np.flatnonzero((t < 0) | (t >= num_frames))
    if bad_t.size:
        i = int(bad_t[0])
        raise UserError(f"{bad_t.size} query point(s) outside the video's {num_frames} frames (the first: #{i}, "
                        f"t={q[i, 0]:g})", path, f"give query frames t in [0, {num_frames - 1}]")
    bad = np.flatnonzero((q[:, 2] < 0) | (q[:, 2] > w) | (q[:, 1] < 0) | (q[:, 1] > h))
    if bad.size:
        i = int(bad[0])
        raise UserError(f"{bad.size} query point(s) outside the {w}x{h} frame (the first: #{i}, y={q[i, 1]:g}, "
                        f"x={q[i, 2]:g})", path, f"give positions with 0 <= x <= {w} and 0 <= y <= {h} "
                        "(pixel centres at i + 0.5)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m inference.track", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a frames folder (or scene folder with rgb/2x or images/) or a video file")
    p.add_argument("--queries", default=None, help="TAP-Vid npz whose query_points (N,3) [t,y,x] are tracked")
    p.add_argument("--grid", type=int, default=None, help="instead of --queries: an N x N grid of points")
    p.add_argument("--grid-frame", type=int, default=0, help="query frame of the --grid points (default 0)")
    p.add_argument("--out", required=True, help="output tracks npz")
    p.add_argument("--method", choices=METHODS, default="lk", help="tracker: lk (weight-free, default) or trackhead")
    p.add_argument("--geometry", default=None,
                   help="geometry folder (<out>/geometry of inference.run, or <scene>/gt/geometry): adds "
                        "tracks_world and tracks_camera lifted with its depth and cameras")
    g = p.add_argument_group("lk")
    d = LKParams()
    g.add_argument("--lk-window", type=int, default=d.window, help=f"LK window size in pixels (default {d.window})")
    g.add_argument("--lk-levels", type=int, default=d.levels, help=f"LK pyramid levels (default {d.levels})")
    g.add_argument("--fb-threshold", type=float, default=d.fb_threshold,
                   help=f"forward-backward error (px) above which a point is occluded (default {d.fb_threshold})")
    g.add_argument("--max-gap", type=int, default=d.max_gap,
                   help=f"frames a lost point is searched for from its last visible frame (default {d.max_gap})")
    h = p.add_argument_group("trackhead")
    h.add_argument("--tokens", default=None,
                   help="token cache folder of the video (preprocess.extract_tokens; it must hold the layers the head "
                        "reads, 4 11 17 23 by default); without it the tokens are computed into <out stem>.tokens/")
    h.add_argument("--target-width", type=int, default=518,
                   help="network input width when the tokens are computed here (default 518, as extract_tokens)")
    h.add_argument("--backbone", default="streamvggt",
                   help="weights of the track head: streamvggt (default), tiny[:seed], a path or Hub id; must be "
                        "the backbone the tokens were extracted with")
    h.add_argument("--window", type=int, default=16,
                   help="frames per track-head pass, the query frame included (bounds memory; default 16)")
    h.add_argument("--iters", type=int, default=4, help="track-head refinement iterations (default 4)")
    add_device_arg(h, "cpu", " of the track head")
    add_logging_args(p)
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    setup_logging_from(args)
    if (args.queries is None) == (args.grid is None):
        raise UserError("give the points to track", None, "pass either --queries Q.npz or --grid N")
    if args.grid is not None and args.grid < 1:
        raise UserError(f"--grid must be >= 1, not {args.grid}", None, "pass --grid 16 for 256 points")
    if args.lk_window < 3 or args.lk_levels < 0 or args.fb_threshold <= 0 or args.max_gap < 1:
        raise UserError(f"LK settings out of range (--lk-window {args.lk_window}, --lk-levels {args.lk_levels}, "
                        f"--fb-threshold {args.fb_threshold}, --max-gap {args.max_gap})", None,
                        "give --lk-window >= 3, --lk-levels >= 0, --fb-threshold > 0 and --max-gap >= 1")
    if args.method == "trackhead" and (args.window < 2 or args.iters < 1):
        raise UserError(f"--window {args.window} / --iters {args.iters}", None,
                        "give --window >= 2 (the query frame and at least one other) and --iters >= 1")
    q = read_queries(args.queries) if args.queries else None
    progress = not args.quiet
    gray, keys = load_gray_video(args.source, progress)
    n_frames, size = gray.shape[0], tuple(gray.shape[1:])
    if n_frames < 2:
        raise UserError("the video has a single frame: there is nothing to track", args.source,
                        "give a video of at least two frames")
    if q is None:
        q = check_queries(grid_queries(args.grid, args.grid_frame, size))
    check_queries_fit(q, n_frames, size, args.queries)
    depth_files = geometry_files(args.geometry, keys) if args.geometry else None
    if args.method == "lk":
        params = LKParams(window=args.lk_window, levels=args.lk_levels, fb_threshold=args.fb_threshold,
                          max_gap=args.max_gap)
        result = track_lk(gray, q, params, progress)
    else:
        from inference.tracking.head import track_with_head

        tokens = args.tokens
        if not tokens:  # compute them: one streaming pass of the backbone, kept beside the output
            from preprocess.extract_tokens import main as extract

            tokens = str(Path(args.out).with_suffix("")) + ".tokens"
            logger.info("no --tokens: extracting them with --backbone %s into %s", args.backbone, tokens)
            extract([str(args.source), "--out", tokens, "--backbone", args.backbone, "--device", args.device,
                     "--target-width", str(args.target_width), *(["-q", "--no-progress"] if args.quiet else [])])
        result = track_with_head(tokens, keys, q, size, args.backbone, window=args.window, iters=args.iters,
                                 device=args.device, progress=progress)
    out = {"query_points": q, **result, "image_size": np.array(size)}
    if depth_files is not None:
        out.update(lift_tracks(out["tracks"], depth_files, size))
    write_tracks(args.out, out)
    vis = 1.0 - float(np.mean(out["occluded"])) if out["occluded"].size else float("nan")
    logger.info("tracked %d points over %d frames (%s); visible %.1f %%; wrote %s", len(q), n_frames, args.method,
                100 * vis, args.out)
    return out


if __name__ == "__main__":
    main()
