"""Inference throughput and memory: our chunked streaming path vs the published per-frame path.

``python benchmarks/bench_inference.py --frames 50 300 --width 112 --height 84``

Both paths use the same tiny StreamVGGT (seeded random) and the same tiny decoder, the same preprocessing and
the same streaming window, on a synthetic moving-shapes video written as an mp4:

* published: one frame at a time through the aggregator (streaming cache), the decoder, the outputs
  resized to full resolution, then per level a clamped [0, 1] PNG write (lossy: 3 channels, 8 bits);
* ours: ``inference.pipeline.run_inference`` with ``LangVGGTPredictor`` (chunks of ``--chunk-size`` frames),
  lossless float32 safetensors at the original resolution (fields only: no geometry/PCA/RGB pictures,
  to compare the same work), plus a second run with everything on ("ours-full").

Each (path, length) runs in its own subprocess so that the peak resident memory (ru_maxrss) is that run's
alone. Bounded memory means: peak RSS for 300 frames ~ peak RSS for 50 frames.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.cli import add_chunk_size_arg  # noqa: E402


def make_video(path: Path, n: int, width: int, height: int, seed: int = 0) -> None:
    """A moving-shapes mp4 (a drifting checkerboard, a circle and a box)."""
    rng = np.random.default_rng(seed)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    yy, xx = np.mgrid[:height, :width]
    colors = rng.integers(40, 255, size=(3, 3))
    for t in range(n):
        img = np.where((((xx + t) // 8 + yy // 8) % 2)[..., None] == 0, 200, 120).astype(np.uint8).repeat(3, -1)
        cx, cy = int(width * (0.3 + 0.2 * np.sin(t / 15))), height // 2
        cv2.circle(img, (cx, cy), height // 6, tuple(int(c) for c in colors[0]), -1)
        x0 = int(width * (0.6 + 0.1 * np.cos(t / 20)))
        cv2.rectangle(img, (x0, height // 5), (x0 + width // 6, height // 5 + height // 4),
                      tuple(int(c) for c in colors[1]), -1)
        w.write(img)
    w.release()


def build_models(seed: int = 0):
    import torch

    from model.decoder import DecoderConfig, SemanticBridgingDecoder
    from model.streamvggt.streamvggt import StreamVGGT

    torch.manual_seed(seed)
    backbone = StreamVGGT.tiny(seed=seed).eval()
    cfg = backbone.config
    decoder = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=cfg.token_dim, layers=tuple(cfg.dpt_layers))).eval()
    return backbone, decoder


def run_published(video: Path, out: Path, window: int) -> int:
    """Per frame: aggregator (cache) -> decoder -> full-res resize -> per-level clamped PNG."""
    import torch
    import torch.nn.functional as F

    from preprocess.crop import FramePreprocessor
    from preprocess.frames import iter_frames, list_frames

    backbone, decoder = build_models()
    refs = list_frames(video)
    prep = FramePreprocessor(target_width=int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_WIDTH)) // 14 * 14)
    cache = backbone.aggregator.new_cache(window)
    layers = decoder.config.layers
    with torch.no_grad():
        for ref, rgb in iter_frames(refs):
            img, _ = prep.prepare(rgb)
            toks, psi = backbone.aggregator(img[None, None], cache=cache)
            pred = decoder([toks[i][0] for i in layers], img[None], patch_start_idx=psi)
            for lvl, x in pred["lang"].items():
                full = F.interpolate(x, size=rgb.shape[:2], mode="bilinear", align_corners=False)[0]
                png = (full.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
                (out / lvl).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(out / lvl / f"{ref.key}.png"), png)
    return len(refs)


def run_ours(video: Path, out: Path, window: int, chunk: int, full: bool) -> int:
    from inference.pipeline import Frame, InferenceSettings, run_inference
    from inference.predictor import LangVGGTPredictor
    from preprocess.crop import FramePreprocessor
    from preprocess.frames import iter_frames, list_frames

    backbone, decoder = build_models()
    refs = list_frames(video)
    prep = FramePreprocessor(target_width=int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_WIDTH)) // 14 * 14)

    def frames():
        for ref, rgb in iter_frames(refs):
            img, info = prep.prepare(rgb)
            yield Frame(ref.key, ref.index, rgb, img, info)

    pred = LangVGGTPredictor(decoder, backbone, None, window=window, geometry=full)
    settings = InferenceSettings(chunk=chunk, geometry=full, pca=full, rgb=full)
    run_inference(frames(), len(refs), pred, out, settings)
    return len(refs)


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        if args.path == "published":
            n = run_published(Path(args.video), out, args.window)
        else:
            n = run_ours(Path(args.video), out, args.window, args.chunk_size, full=args.path == "ours-full")
        dt = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(json.dumps({"path": args.path, "frames": n, "seconds": dt, "fps": n / dt,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "output_mb": size / 2**20}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[50, 300], help="video lengths to run")
    p.add_argument("--width", type=int, default=112, help="frame width (pixels)")
    p.add_argument("--height", type=int, default=84, help="frame height (pixels)")
    p.add_argument("--window", type=int, default=16, help="streaming cache window (past frames), same for both")
    add_chunk_size_arg(p, 8, "frames per pass in our path", old_spelling=True)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    p.add_argument("--paths", nargs="+", default=["published", "ours", "ours-full"],
                   help="which paths to run (published, ours, ours-full)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--video", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.frames:
            video = Path(tmp) / f"video_{n}.mp4"
            make_video(video, n, args.width, args.height)
            for path in args.paths:
                cmd = [sys.executable, __file__, "--child", "--path", path, "--video", str(video),
                       "--window", str(args.window), "--chunk-size", str(args.chunk_size), "--threads", str(args.threads)]
                r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if r.returncode != 0:
                    raise SystemExit(f"{path} on {n} frames failed:\n{r.stderr[-3000:]}")
                res = json.loads(r.stdout.strip().splitlines()[-1])
                results.append(res)
                print(f"{path:10s} {n:4d} frames: {res['fps']:7.2f} frames/s, peak RSS {res['peak_rss_mb']:7.1f} MB, "
                      f"output {res['output_mb']:6.1f} MB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
