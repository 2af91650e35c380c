"""Benchmark the StreamVGGT aggregator on CPU: frame-by-frame streaming vs chunked processing.

Prints CPU seconds per frame (process time, all threads), wall seconds per frame, the key/value cache size and
the peak resident memory during the run of each mode (each mode runs in its own fresh process; the Linux peak
counter is reset after model building and warm-up), plus the chunked/streaming ratio.
A third mode, ``naive``, emulates the official streaming cache (raw keys concatenated every frame, then
re-normalised and re-rotated) to show what the preallocated finished-key ring saves. A fourth,
``chunked-masked``, is ``chunked`` with the pre-slicing attention: every query frame of a chunk against the whole
cache + chunk under a boolean mask (what windowed chunks cost before they attended per-frame key slices).
With ``--repeats N`` the modes run N times in turn (fresh processes) and the best CPU time of each is kept.

    python -m benchmarks.bench_backbone --frames 24 --chunk-size 8
    python -m benchmarks.bench_backbone --threads 1 --window 4 --chunk-size 8 --modes streaming,chunked,chunked-masked
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import torch

from utils.cli import add_chunk_size_arg


def build(args: argparse.Namespace):
    from model.streamvggt.aggregator import Aggregator
    from model.streamvggt.config import StreamVGGTConfig

    cfg = StreamVGGTConfig(img_size=args.width, embed_dim=args.dim, depth=args.depth, num_heads=args.heads,
                           patch_embed="conv")
    torch.manual_seed(0)
    return Aggregator.from_config(cfg).eval()


def naive_attend(attn, rope, store: dict, idx: int):
    """Official-style cache: concatenate raw keys/values each frame, re-normalise and re-rotate all keys."""
    def attend(q, k, v):
        ks, vs = store.get(idx, (None, None))
        ks = k if ks is None else torch.cat([ks, k], dim=2)
        vs = v if vs is None else torch.cat([vs, v], dim=2)
        store[idx] = (ks, vs)
        k_all = rope.apply(attn.k_norm(ks))  # the per-frame renormalisation/rotation of the whole cache
        return torch.nn.functional.scaled_dot_product_attention(q, k_all, vs)
    return attend


def reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS counter (Linux) and return the current RSS in MB (0 if unavailable)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return read_status("VmRSS")


def read_status(field: str) -> float:
    """A memory field of /proc/self/status in MB (0 if unavailable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1e3
    except OSError:
        pass
    return 0.0


def run_mode(mode: str, args: argparse.Namespace, queue) -> None:
    torch.set_num_threads(args.threads)
    if mode == "chunked-masked":  # force the masked attention (no per-query-frame key slices)
        from model.streamvggt import cache as cache_module

        cache_module.SLICE_MIN_TOKENS = 1 << 62
    agg = build(args)
    g = torch.Generator().manual_seed(1)
    imgs = torch.rand(1, args.frames, 3, args.height, args.width, generator=g)
    cache = agg.new_cache(args.window)
    with torch.inference_mode():
        agg(imgs[:, :1])  # warm-up
        rss_before = reset_peak_rss()
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        if mode == "streaming":
            for t in range(args.frames):
                agg(imgs[:, t:t + 1], cache=cache)
        elif mode in ("chunked", "chunked-masked"):
            for t in range(0, args.frames, args.chunk_size):
                agg(imgs[:, t:t + args.chunk_size], cache=cache)
        else:  # naive: patch the global blocks' attention to the official-style concatenating cache
            store: dict = {}
            rope = agg._rope(args.height // 14, args.width // 14, imgs.device)
            for t in range(args.frames):
                x = (imgs[:, t:t + 1] - torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)) \
                    / torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
                tok = torch.cat([agg.special_tokens([t], 1), agg.patch_embed(x[0])], dim=1)
                for i in range(agg.depth):
                    tok = agg.frame_blocks[i](tok, rope=rope)
                    blk = agg.global_blocks[i]
                    tok = blk(tok, rope=rope, attend=naive_attend(blk.attn, rope, store, i))
        cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
    queue.put({"mode": mode, "cpu_s_per_frame": cpu / args.frames, "wall_s_per_frame": wall / args.frames,
               "cache_mb": cache.nbytes / 1e6, "rss_before_mb": rss_before,
               "peak_rss_mb": read_status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=24, help="number of frames to stream")
    add_chunk_size_arg(p, 8, "frames per chunk in chunked mode", old_spelling=True)
    p.add_argument("--window", type=int, default=None, help="max past frames attended (default: unbounded)")
    p.add_argument("--height", type=int, default=112, help="frame height in pixels (multiple of 14)")
    p.add_argument("--width", type=int, default=154, help="frame width in pixels (multiple of 14)")
    p.add_argument("--dim", type=int, default=256, help="aggregator width (conv patch embed)")
    p.add_argument("--depth", type=int, default=8, help="number of frame/global block pairs")
    p.add_argument("--heads", type=int, default=8, help="attention heads")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--modes", default="streaming,chunked,naive",
                   help="comma-separated modes to run: streaming, chunked, chunked-masked, naive")
    p.add_argument("--repeats", type=int, default=1,
                   help="run the modes this many times in turn (fresh processes); the best CPU time is kept")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    modes = args.modes.split(",")
    unknown = set(modes) - {"streaming", "chunked", "chunked-masked", "naive"}
    if unknown:
        p.error(f"unknown mode(s) {sorted(unknown)}")
    ctx = mp.get_context("spawn")
    results: dict = {}
    for _ in range(args.repeats):
        for mode in modes:
            q = ctx.Queue()
            proc = ctx.Process(target=run_mode, args=(mode, args, q))
            proc.start()
            r = q.get()
            proc.join()
            if mode not in results or r["cpu_s_per_frame"] < results[mode]["cpu_s_per_frame"]:
                results[mode] = r
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"aggregator dim {args.dim}, depth {args.depth}, {args.height}x{args.width}, {args.frames} frames, "
          f"chunk {args.chunk_size}, window {args.window}, {args.threads} threads, best of {args.repeats}")
    for r in results.values():
        print(f"{r['mode']:>14}: {r['cpu_s_per_frame']:.4f} CPU s/frame, {r['wall_s_per_frame']:.4f} wall s/frame, "
              f"cache {r['cache_mb']:.1f} MB, peak RSS during the run {r['peak_rss_mb']:.0f} MB "
              f"(+{r['peak_rss_mb'] - r['rss_before_mb']:.0f} MB over the {r['rss_before_mb']:.0f} MB before)")
    for mode in ("chunked", "chunked-masked"):
        if "streaming" in results and mode in results:
            ratio = results[mode]["cpu_s_per_frame"] / results["streaming"]["cpu_s_per_frame"]
            print(f"{mode} / streaming CPU time per frame: {ratio:.2f}")
    if "streaming" in results and "naive" in results:
        ratio = results["naive"]["cpu_s_per_frame"] / results["streaming"]["cpu_s_per_frame"]
        print(f"naive (official-style cache) / streaming CPU time per frame: {ratio:.2f}")


if __name__ == "__main__":
    main()
