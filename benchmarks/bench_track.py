"""Benchmark the weight-free tracker and dense flow on CPU: seconds and peak memory for 256 / 1,024 / 4,096
points over 64 and 300 frames (a panning texture video, queries spread over the frames), and DIS flow frames/s.

    python -m benchmarks.bench_track                       # 480 x 854 frames, every configuration
    python -m benchmarks.bench_track --size 240 427 --points 256 --frames 64 --json bench_track.json
    python -m benchmarks.bench_track --frames 1000 --points 256 --disk     # bounded memory on a long video

Each configuration runs in a fresh process (the Linux peak-RSS counter belongs to the process), so the memory
reported is that configuration's own peak: the grey video (T x H x W bytes) plus the tracks.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import numpy as np


def _video(t: int, h: int, w: int, disk: bool, seed: int = 0):
    """A texture panning 1.7 px right and 0.9 px down per frame, turning back every 200 frames (so long videos keep
    their points in view); in memory, or frame by frame into a disk-backed store."""
    import cv2

    from inference.tracking.store import DiskFrames

    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((h + 200 * 2 + 8, w + 200 * 3 + 8)).astype(np.float32), (0, 0), 2.0)
    tex = ((tex - tex.min()) / (tex.max() - tex.min()) * 255).astype(np.float32)
    out = DiskFrames(t, (h, w)) if disk else np.empty((t, h, w), np.uint8)
    for f in range(t):
        g = f % 400 if f % 400 < 200 else 400 - f % 400
        m = np.float32([[1, 0, -1.7 * g], [0, 1, -0.9 * g]])
        out[f] = cv2.warpAffine(tex, m, (w, h)).astype(np.uint8)
    return out


def _run(cfg: dict, q: mp.Queue) -> None:
    import cv2

    from inference.tracking.flow import DenseFlow
    from inference.tracking.lk import track_lk

    cv2.setNumThreads(cfg["threads"])
    rng = np.random.default_rng(0)
    h, w = cfg["size"]
    gray = _video(cfg["frames"], h, w, cfg["disk"])
    n = cfg["points"]
    queries = np.stack([rng.integers(0, cfg["frames"], n), rng.uniform(8, h - 8, n), rng.uniform(8, w - 8, n)], 1)
    start = time.perf_counter()
    res = track_lk(gray, queries, progress=False)
    secs = time.perf_counter() - start
    out = {**cfg, "seconds": secs, "ms_per_frame": 1000 * secs / cfg["frames"],
           "visible": float(1 - res["occluded"].mean()),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if cfg.get("flow"):
        dis = DenseFlow("medium")
        start = time.perf_counter()
        k = min(16, cfg["frames"] - 1)
        for f in range(k):
            dis(gray[f], gray[f + 1])
        out["dis_fps"] = k / (time.perf_counter() - start)
    q.put(out)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_track", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, nargs=2, default=[480, 854], metavar=("H", "W"), help="frame size")
    p.add_argument("--points", type=int, nargs="+", default=[256, 1024, 4096], help="numbers of query points")
    p.add_argument("--frames", type=int, nargs="+", default=[64, 300], help="video lengths")
    p.add_argument("--threads", type=int, default=2, help="OpenCV threads")
    p.add_argument("--disk", action="store_true",
                   help="keep the grey video in a disk-backed store (what inference.track does above 1 GiB): peak "
                        "memory is then a few frames plus the tracks, whatever the length")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows = []
    for frames in args.frames:
        for i, points in enumerate(args.points):
            q = ctx.Queue()
            cfg = {"size": args.size, "frames": frames, "points": points, "threads": args.threads, "flow": i == 0,
                   "disk": args.disk}
            proc = ctx.Process(target=_run, args=(cfg, q))
            proc.start()
            row = q.get()
            proc.join()
            rows.append(row)
            extra = f"  DIS {row['dis_fps']:.1f} frames/s" if "dis_fps" in row else ""
            print(f"{frames:4d} frames {points:5d} points: {row['seconds']:7.2f} s ({row['ms_per_frame']:6.1f} ms/frame)"
                  f"  peak {row['peak_rss_mb']:7.0f} MB  visible {100 * row['visible']:.0f} %{extra}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
