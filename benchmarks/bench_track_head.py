"""Benchmark the StreamVGGT track head as ``inference.track --method trackhead`` runs it: windows of W frames that
start with the query frame, full-size head (65.9 M parameters, random weights) on random tokens at 518 x 294.
Prints frames/s (new frames per second: W - 1 per window) and the peak GPU memory per window.

    python -m benchmarks.bench_track_head                    # CUDA, windows of 16 frames, 256 and 1,024 points
    python -m benchmarks.bench_track_head --tiny --device cpu --windows 2 --points 8   # smoke run of the code path
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def build(tiny: bool, device: torch.device):
    from model.streamvggt.heads.track_head import TrackHead

    if tiny:
        head = TrackHead(dim_in=64, features=16, iters=2, corr_levels=2, corr_radius=2, hidden_size=32,
                         out_channels=(8, 16, 32, 32), intermediate_layer_idx=(0, 1, 2, 3), tracker_depth=1,
                         num_heads=4)
        return head.to(device).eval(), 64, (70, 84), (0, 1, 2, 3)
    return TrackHead().to(device).eval(), 2048, (294, 518), (4, 11, 17, 23)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_track_head", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--tiny", action="store_true", help="tiny head and frames (smoke run on any device)")
    p.add_argument("--window", type=int, default=16, help="frames per pass, the query frame included (default 16)")
    p.add_argument("--windows", type=int, default=4, help="timed windows per configuration (after one warm-up)")
    p.add_argument("--points", type=int, nargs="+", default=[256, 1024], help="numbers of query points")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    head, dim, (h, w), layers = build(args.tiny, device)
    p_tokens = 5 + (h // 14) * (w // 14)
    tokens: list = [None] * (max(layers) + 1)
    for layer in layers:
        tokens[layer] = torch.randn(1, args.window, p_tokens, dim, device=device)
    results = {"device": str(device), "window": args.window, "hw": [h, w], "runs": []}
    for n in args.points:
        q = torch.rand(1, n, 2, device=device) * torch.tensor([w - 1.0, h - 1.0], device=device)

        def once(q=q):
            with torch.inference_mode():
                head(tokens, (1, args.window, 3, h, w), 5, query_points=q, frames_chunk_size=1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        once()  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        for _ in range(args.windows):
            once()
        secs = (time.perf_counter() - t0) / args.windows
        row = {"points": n, "seconds_per_window": secs, "frames_per_second": (args.window - 1) / secs,
               "peak_gpu_memory_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None}
        results["runs"].append(row)
        mem = f"  peak {row['peak_gpu_memory_gb']:.2f} GB" if row["peak_gpu_memory_gb"] is not None else ""
        print(f"track head, {n:5d} points, windows of {args.window}: {row['frames_per_second']:.2f} frames/s{mem}",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
