"""Benchmark: reading long real-size videos is bounded in memory (issue 24).

    python benchmarks/bench_footage.py                        # 2000 frames of 640x480 (and 300 for comparison)
    python benchmarks/bench_footage.py --frames 500 --size 1920x1080 --fourcc MJPG --ext .avi
    python benchmarks/bench_footage.py --frames 100 --size 1920x1080 --ext .png   # a folder of PNG frames

Writes a video (OpenCV, ``--fourcc`` into ``--ext``; ``--ext .png``: a folder of PNG frames) in a temporary folder, then in a fresh child process per
length lists its frames (``preprocess.frames.list_frames``: counts by grabbing) and decodes every one of them
through ``iter_frames`` (the reader of token extraction, targets and inference), reporting frames/s and the
child's peak RSS (max RSS from ``getrusage``) minus its RSS after the imports. Bounded memory means the peak does
not grow with the number of frames: one decoded frame is alive at a time. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[2])
from preprocess.frames import iter_frames, list_frames
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
refs = list_frames(sys.argv[1])
t_list = time.perf_counter() - t
t = time.perf_counter()
n = 0
for _, rgb in iter_frames(refs):
    n += 1
t_read = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"frames": n, "list_s": t_list, "read_s": t_read, "rss_base_mb": base / 1024,
                  "rss_peak_mb": peak / 1024}))
"""


def write_video(path: Path, n: int, w: int, h: int, fourcc: str) -> None:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30, (w, h))
    if not writer.isOpened():
        raise SystemExit(f"this OpenCV build cannot write {fourcc} into {path.suffix}")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for i in range(n):
        writer.write(np.roll(base, 3 * i, axis=1))  # moving content, so the codec has real work
    writer.release()


def write_png_frames(folder: Path, n: int, w: int, h: int) -> None:
    """A frames folder as phones and extractors leave them: smooth content with sensor-like noise (random noise
    alone would make PNG's deflate a copy and its decode unrealistically cheap)."""
    import cv2
    import numpy as np

    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x / 8) % 256, (y / 5) % 256, ((x + y) / 9) % 256], -1).astype(np.uint8)
    base = cv2.GaussianBlur(base, (0, 0), 3)
    noise = np.random.default_rng(0).integers(0, 8, (h, w, 3), dtype=np.uint8)
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:06d}.png"), np.roll(base, 3 * i, axis=1) + noise)


def measure(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(ROOT)], capture_output=True, text=True,
                         check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[300, 2000], help="video lengths to compare")
    p.add_argument("--size", default="640x480", help="WxH of the frames")
    p.add_argument("--fourcc", default="mp4v", help="OpenCV codec (mp4v, MJPG, XVID, VP80, ...)")
    p.add_argument("--ext", default=".mp4", help="container (.mp4, .avi, .mov, .mkv, .webm)")
    args = p.parse_args(argv)
    w, h = (int(x) for x in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.frames:
            path = Path(tmp) / f"clip_{n}{args.ext}"
            if args.ext == ".png":
                path = path.with_suffix("")
                write_png_frames(path, n, w, h)
            else:
                write_video(path, n, w, h, args.fourcc)
            r = measure(path)
            size = (sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size)
            r.update(length=n, size=args.size, codec="png" if path.is_dir() else f"{args.fourcc}{args.ext}",
                     mb=size / 1e6,
                     fps=r["frames"] / r["read_s"] if r["read_s"] else None,
                     rss_growth_mb=r["rss_peak_mb"] - r["rss_base_mb"])
            rows.append(r)
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    print(f"{'frames':>7} {'video MB':>9} {'list s':>7} {'read s':>7} {'frames/s':>9} {'peak RSS MB':>12} "
          f"{'growth MB':>10}  ({os.cpu_count()} cores, {resource.getpagesize()} B pages)")
    for r in rows:
        print(f"{r['frames']:>7} {r['mb']:>9.1f} {r['list_s']:>7.2f} {r['read_s']:>7.2f} {r['fps']:>9.1f} "
              f"{r['rss_peak_mb']:>12.1f} {r['rss_growth_mb']:>10.1f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
