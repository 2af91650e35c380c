"""How fast the viewer answers a text query: ``python benchmarks/bench_viewer.py [--fields OUT] [--work DIR]``.

Without ``--fields`` a 64-frame 200x150 inference output is built first (``preprocess.make_synthetic`` ->
``inference.run --backbone tiny`` with a tiny random decoder and a random 512->3 autoencoder, cameras given a
finite focal length: ``tests/viewer/synth.py``), in ``--work`` (kept, so a rerun reuses it) or a temporary folder.

The viewer is started in this process (viser server on 127.0.0.1, any free port, no browser needed: the timings
end when the viewer has handed the new colours to viser) and a query is submitted through its own callback, as the
*add query* button does, with the slider on the middle frame. Reported per query (cold = the first, which also
decodes the latent grid's cells; warm = a second text; rerun = the level changed):

* ``view``: until the frame on screen shows the query (its points recoloured, the picture updated);
* ``all``: until every frame is done (the rest are recoloured batch by batch after the one on screen).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed_query(viewer, text: str | None = None, level: str | None = None) -> dict:
    """Submit a query (or change the level, which reruns the kept ones) and time the view and all frames."""
    cur = viewer.scene.keys[viewer.frame]
    seen = threading.Event()
    original = viewer.refresh_colors

    def spy(keys=None):
        original(keys)
        if keys is None or cur in keys:
            seen.set()

    viewer.refresh_colors = spy
    try:
        t0 = time.perf_counter()
        if level is not None:
            viewer.gui_level.value = level
        else:
            viewer.gui_text.value = text
            viewer.submit_query()
        seen.wait()
        t_view = time.perf_counter() - t0
        viewer.wait()
        t_all = time.perf_counter() - t0
    finally:
        viewer.refresh_colors = original
    return {"view_s": round(t_view, 3), "all_s": round(t_all, 3)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fields", default=None, help="an existing inference output (default: build the synthetic one)")
    p.add_argument("--work", default=None, help="folder for the synthetic output (kept; reused when present)")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--width", type=int, default=200)
    p.add_argument("--height", type=int, default=150)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = None
    if args.fields:
        out = Path(args.fields)
    else:
        from tests.viewer.synth import make_output

        work = Path(args.work) if args.work else Path(tmp := tempfile.mkdtemp(prefix="bench-viewer-"))
        out = work / "out"
        if not (out / "geometry" / "cameras.json").exists():
            t = time.perf_counter()
            make_output(work, frames=args.frames, width=args.width, height=args.height)
            print(f"built the synthetic output in {time.perf_counter() - t:.0f} s: {out}", file=sys.stderr)
    from viewer.app import build_parser, start

    t = time.perf_counter()
    server, viewer = start(build_parser().parse_args(["--fields", str(out), "--hash-text", "--port", "0", "-q"]),
                           port=0)
    t_start = time.perf_counter() - t
    try:
        viewer.set_frame(viewer.scene.n // 2)
        res = {"fields": str(out), "frames": viewer.scene.n, "size": list(viewer.scene.hw[viewer.scene.keys[0]]),
               "torch_threads": torch.get_num_threads(), "start_s": round(t_start, 2),
               "grid": not viewer.engine.exact,
               "cold": timed_query(viewer, "red ball"),
               "warm": timed_query(viewer, "green box"),
               "rerun_two_queries_level_small": timed_query(viewer, level="small")}
    finally:
        viewer.close()
        server.stop()
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
