"""Benchmark: our token cache vs the published storage scheme, and extraction memory vs video length.

    python benchmarks/bench_token_cache.py                 # defaults below; prints a table and a JSON line

(1) Storage, on the same backbone config and frames. The backbone is a random StreamVGGT with the official
    depth (24 block pairs, so that keeping the 4 DPT layers of 24 matters) but a small width (embed 64) so it
    runs on a CPU; token bytes scale with the width identically for both schemes.
    * published: all 24 layers, fp32, one pickled dict per frame ``{'aggregated_tokens_list': [24 x (1,1,P,2C)],
      'patch_start_idx': 5}`` -- re-created here with ``pickle.dump`` (and read back with ``pickle.load`` of the
      files this script just wrote: the only pickle use in the project, confined to this baseline);
    * ours: ``preprocess.extract_tokens`` files (layers 4, 11, 17, 23, fp16, safetensors, checksummed); at the
      official token size also ``--dtype int8`` (one byte per value + a fp16 scale per token row; write includes
      the quantisation, read the de-quantisation to float32).
    Reported per frame: bytes, write time (tokens already computed; including ``os.sync()`` so each scheme
    pays for flushing its own bytes), read time (load the 4 decoder layers as
    torch tensors and touch every value; files are in the page cache for both, so this measures parsing and
    copying, not the disk), and end-to-end extraction time (backbone + write).
(2) Peak memory (max RSS of a fresh process) of extracting 50 vs 200 frames with window 16, tiny config
    (``StreamVGGT.tiny``), measured in child processes; also the increase over the RSS after model set-up.
(3) ``--speed`` (only this part; minutes): ``python -m preprocess.extract_tokens`` with the tiny backbone on a
    ``--speed-frames`` 640x480 mp4v video written here (518x392 network input, 1,036 patch tokens a frame), once
    per ``--speed-configs`` WINDOW:CHUNK pair, under cProfile: frames/s and the share of the wall time spent in
    decoding (OpenCV), preprocessing (resize, to tensor), the backbone, and within it attention (of which
    ``scaled_dot_product_attention`` over the cache) and the MLPs, and in the checks, fp16 cast and writing.

    python benchmarks/bench_token_cache.py --speed --threads 2 --speed-frames 150
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from preprocess import extract_tokens as ex  # noqa: E402
from preprocess.crop import FramePreprocessor  # noqa: E402
from preprocess.frames import iter_frames, list_frames  # noqa: E402
from preprocess.token_cache import (  # noqa: E402
    SUFFIX,
    TokenCache,
    frame_meta_for,
    quantize_int8,
    write_scene_meta,
    write_token_file,
)
from utils.cli import add_chunk_size_arg  # noqa: E402


def make_frames(folder: Path, n: int, hw: tuple[int, int] = (536, 960)) -> Path:
    """n smooth moving synthetic RGB frames as HyperNeRF-style PNGs ``000001.png``..; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        p = folder / f"{i + 1:06d}.png"
        if p.exists():
            continue
        rgb = np.stack([127 + 90 * np.sin((xx + 7 * i) / 41.0), 127 + 90 * np.cos(yy / 29.0 + 0.05 * i),
                        127 + 60 * np.sin((xx + yy) / 53.0 - 0.03 * i)], -1)
        cv2.imwrite(str(p), np.clip(rgb, 0, 255).astype(np.uint8)[:, :, ::-1])
    return folder


def bench_backbone(seed: int = 0) -> ex.Backbone:
    """Random StreamVGGT aggregator with 24 block pairs, width 64 (conv patch embed), DPT layers 4/11/17/23."""
    from model.streamvggt.aggregator import Aggregator
    from model.streamvggt.config import StreamVGGTConfig

    cfg = StreamVGGTConfig(embed_dim=64, depth=24, num_heads=4, patch_embed="conv")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        agg = Aggregator.from_config(cfg).eval().requires_grad_(False)
    bid = f"bench-depth24-width64-random-seed{seed}"
    return ex.Backbone(aggregator=agg, config=cfg, id=bid, info={"id": bid, "config": cfg.to_dict()})


def stream_all_layers(backbone: ex.Backbone, frames, width: int, window: int, chunk: int):
    """Yield (ref, list of depth tensors (P, 2C) fp32) per frame, streamed exactly like the extractor."""
    prep = FramePreprocessor(width, "crop")
    cache = backbone.aggregator.new_cache(window)
    batch = []
    for ref, rgb in iter_frames(frames):
        batch.append((ref, prep.prepare(rgb)[0]))
        if len(batch) == chunk or ref is frames[-1]:
            with torch.inference_mode():
                out, _ = backbone.aggregator(torch.stack([b[1] for b in batch])[None], cache)
            for j, (r, _) in enumerate(batch):
                yield r, [o[0, j].clone() for o in out]
            batch = []


def write_published(path: Path, layers_fp32: list[torch.Tensor]) -> None:
    obj = {"aggregated_tokens_list": [t[None, None].numpy() for t in layers_fp32], "patch_start_idx": 5}
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def read_published(path: Path, layers: list[int]) -> list[torch.Tensor]:
    with open(path, "rb") as f:
        obj = pickle.load(f)  # our own just-written baseline files, never third-party data
    return [torch.from_numpy(obj["aggregated_tokens_list"][li][0, 0]) for li in layers]


def best_per_frame(fn, n: int, repeats: int, sync: bool = False) -> float:
    """Best of ``repeats`` timed calls of ``fn`` (which handles ``n`` frames), in seconds per frame. With
    ``sync`` the time includes ``os.sync()``: each scheme pays for flushing its own written bytes, instead of
    the next measurement paying for the previous one's dirty pages."""
    best = float("inf")
    for _ in range(repeats):
        if sync:
            os.sync()
        t = time.perf_counter()
        fn()
        if sync:
            os.sync()
        best = min(best, (time.perf_counter() - t) / n)
    return best


def storage_benchmark(n: int, width: int, window: int, chunk: int, work: Path, repeats: int = 3) -> dict:
    frames = list_frames(make_frames(work / "frames", n))
    bb = bench_backbone()
    layers = list(bb.config.dpt_layers)
    per_frame = list(stream_all_layers(bb, frames, width, window, chunk))  # tokens computed once, kept in memory
    res: dict = {"frames": n, "input_hw": list(per_frame[0][1][0].shape), "layers_kept": layers,
                 "depth": bb.config.depth, "embed_dim": bb.config.embed_dim}

    pub = work / "published"
    pub.mkdir()

    def timed(fn, sync: bool = False) -> float:
        return best_per_frame(fn, n, repeats, sync)

    res["published_write_s"] = timed(lambda: [write_published(pub / f"{r.key}.pkl", toks) for r, toks in per_frame],
                                      sync=True)
    res["published_bytes"] = sum(p.stat().st_size for p in pub.iterdir()) / n

    ours = work / "ours" / "tokens"
    s = ex.ExtractionSettings(target_width=width, window=window, chunk_size=chunk, progress=False)
    crop = FramePreprocessor(width, "crop").plan((536, 960))
    scene = {**ex.build_scene_meta(bb, frames, crop, layers, s, "fp32"), "complete": True}
    write_scene_meta(ours, scene)
    res["ours_write_s"] = timed(lambda: [
        write_token_file(ours / f"{r.key}{SUFFIX}", [toks[li].half() for li in layers], layers,
                         frame_meta_for(scene, r.key, r.index)) for r, toks in per_frame], sync=True)
    res["ours_bytes"] = sum((ours / f"{r.key}{SUFFIX}").stat().st_size for r, _ in per_frame) / n

    cache = TokenCache(ours)
    # read = the 4 decoder layers as torch tensors in RAM (the mapped pages copied, as a DataLoader collate
    # does); "+fp32" additionally converts to fp32 on the CPU (on a GPU this happens after the transfer)
    res["published_read_s"] = timed(lambda: [[x.clone() for x in read_published(pub / f"{r.key}.pkl", layers)]
                                             for r, _ in per_frame])
    res["ours_read_s"] = timed(lambda: [[x.clone() for x in cache.load(r.key)] for r, _ in per_frame])
    res["published_read_fp32_s"] = timed(lambda: [[x.float().clone() for x in read_published(pub / f"{r.key}.pkl",
                                                                                              layers)]
                                                  for r, _ in per_frame])
    res["ours_read_fp32_s"] = timed(lambda: [[x.float() for x in cache.load(r.key)] for r, _ in per_frame])
    a = sum(float(x.sum()) for r, _ in per_frame for x in read_published(pub / f"{r.key}.pkl", layers))
    b = sum(float(x.float().sum()) for r, _ in per_frame for x in cache.load(r.key))
    res["read_sum_rel_diff"] = abs(a - b) / max(abs(a), 1e-9)  # fp16 rounding only

    # end to end: backbone + storage, same streaming; alternating, best of `repeats`
    s_over = ex.ExtractionSettings(target_width=width, window=window, chunk_size=chunk, progress=False,
                                   overwrite=True)

    def published_e2e() -> None:
        for ref, toks in stream_all_layers(bb, frames, width, window, chunk):
            write_published(pub / f"e2e_{ref.key}.pkl", toks)

    res["published_extract_s"], res["ours_extract_s"] = float("inf"), float("inf")
    for _ in range(repeats):  # alternate, so that load changes on a shared machine hit both alike
        res["published_extract_s"] = min(res["published_extract_s"], best_per_frame(published_e2e, n, 1, True))
        res["ours_extract_s"] = min(res["ours_extract_s"], best_per_frame(
            lambda: ex.extract_tokens(bb, frames, work / "ours_e2e" / "tokens", s_over), n, 1, True))
    return res


def full_width_storage(n: int, work: Path, repeats: int = 3, hw: tuple[int, int] = (294, 518)) -> dict:
    """Storage only, at the official token size (2C = 2048, 24 layers; P = 5 + 21*37 = 782 at 518x294):
    random tokens stand in for the backbone (a 1.2 B-parameter model does not run here)."""
    P = 5 + (hw[0] // 14) * (hw[1] // 14)
    layers = [4, 11, 17, 23]
    g = torch.Generator().manual_seed(0)
    toks = [torch.randn(P, 2048, generator=g) for _ in range(24)]
    scene = {"backbone": "random-tokens", "layers": layers, "embed_dim": 1024, "token_dim": 2048, "num_tokens": P,
             "grid": [hw[0] // 14, hw[1] // 14], "patch_start_idx": 5, "patch_size": 14, "dtype": "fp16",
             "compute_dtype": "fp32", "crop": FramePreprocessor(hw[1], "crop").plan((536, 960)).to_dict(),
             "window": 128, "chunk_size": 1, "frames": [{"key": f"{i + 1:06d}", "index": i} for i in range(n)],
             "complete": True}
    pub, ours = work / "published", work / "ours"
    pub.mkdir(parents=True)
    write_scene_meta(ours, scene)
    keys = [f["key"] for f in scene["frames"]]

    def timed(fn, sync: bool = False) -> float:
        return best_per_frame(fn, n, repeats, sync)

    res = {"frames": n, "num_tokens": P, "token_dim": 2048}
    res["published_write_s"] = timed(lambda: [write_published(pub / f"{k}.pkl", toks) for k in keys], sync=True)
    res["ours_write_s"] = timed(lambda: [
        write_token_file(ours / f"{k}{SUFFIX}", [toks[li].half() for li in layers], layers,
                         frame_meta_for(scene, k, i)) for i, k in enumerate(keys)], sync=True)
    res["published_bytes"] = (pub / f"{keys[0]}.pkl").stat().st_size
    res["ours_bytes"] = (ours / f"{keys[0]}{SUFFIX}").stat().st_size
    cache = TokenCache(ours)
    res["published_read_s"] = timed(lambda: [[x.clone() for x in read_published(pub / f"{k}.pkl", layers)]
                                             for k in keys])
    res["ours_read_s"] = timed(lambda: [[x.clone() for x in cache.load(k)] for k in keys])

    # int8: quantised per token row (fp16 scales); the write includes the quantisation, the read returns new
    # float32 tensors de-quantised from the memory-mapped bytes (nothing to clone)
    ours8 = work / "ours_int8"
    scene8 = {**scene, "dtype": "int8"}
    write_scene_meta(ours8, scene8)

    def write_int8() -> None:
        for i, k in enumerate(keys):
            q, sc = zip(*(quantize_int8(toks[li]) for li in layers), strict=True)
            write_token_file(ours8 / f"{k}{SUFFIX}", list(q), layers, frame_meta_for(scene8, k, i), scales=list(sc))

    res["int8_write_s"] = timed(write_int8, sync=True)
    res["int8_bytes"] = (ours8 / f"{keys[0]}{SUFFIX}").stat().st_size
    cache8 = TokenCache(ours8)
    res["int8_read_s"] = timed(lambda: [cache8.load(k) for k in keys])
    got = cache8.load(keys[0])
    num = sum(float((g - toks[li]).norm() ** 2) for g, li in zip(got, layers, strict=True))
    den = sum(float(toks[li].norm() ** 2) for li in layers)
    res["int8_rel_l2_error"] = (num / den) ** 0.5
    res["int8_max_abs_error"] = max(float((g - toks[li]).abs().max()) for g, li in zip(got, layers, strict=True))
    return res


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _proc_status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so the extraction's own peak can be seen (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(frames_dir: str, n: int, width: int, window: int, chunk: int, out: str) -> None:
    """Run in a fresh process: tiny backbone, extract the first n frames, print peak RSS as JSON."""
    torch.set_num_threads(1)
    bb = ex.load_aggregator("tiny", seed=0)
    frames = list_frames(frames_dir)[:n]
    prep = FramePreprocessor(width, "crop")
    with torch.inference_mode():  # warm up allocator/kernels on one chunk so the baseline includes them
        bb.aggregator(torch.stack([prep.prepare(r)[0] for _, r in iter_frames(frames[:chunk])])[None],
                      bb.aggregator.new_cache(window))
    # imports + model + warm-up; VmHWM is this process's own (ru_maxrss would inherit the parent's across exec)
    setup_peak = _proc_status_mb("VmHWM") or _maxrss_mb()
    reset = _reset_peak_rss()
    base = _proc_status_mb("VmRSS") if reset else setup_peak
    s = ex.ExtractionSettings(target_width=width, window=window, chunk_size=chunk, progress=False)
    t = time.perf_counter()
    rep = ex.extract_tokens(bb, frames, out, s)
    secs = time.perf_counter() - t
    peak = _proc_status_mb("VmHWM") if reset else _maxrss_mb()
    print(json.dumps({"frames": n, "written": rep.written, "setup_peak_mb": setup_peak, "start_mb": base,
                      "extract_peak_mb": peak, "process_peak_mb": max(peak, setup_peak),
                      "peak_reset": reset, "s_per_frame": secs / n}))


def memory_benchmark(counts: list[int], width: int, window: int, chunk: int, work: Path) -> list[dict]:
    frames_dir = make_frames(work / "frames", max(counts))
    rows = []
    for n in counts:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(frames_dir), str(n), str(width),
               str(window), str(chunk), str(work / f"mem_{n}" / "tokens")]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


# ----------------------------------------------------------------------------------------------- (3) speed
STAGES = {  # stage -> the functions whose cumulative time it is (cProfile names: file suffix, function)
    "decode (OpenCV)": [("~", "<method 'read' of 'cv2.VideoCapture' objects>")],
    "preprocess (resize, to tensor)": [("preprocess/crop.py", "prepare")],
    "backbone": [("model/streamvggt/aggregator.py", "forward")],
    "  attention (qkv, SDPA over the cache, proj)": [("model/streamvggt/layers.py", "forward", "Attention")],
    "    of it scaled_dot_product_attention": [("~", "<built-in method torch._C._nn.scaled_dot_product_attention>")],
    "  MLP": [("model/streamvggt/layers.py", "forward", "Mlp")],
    "checks + fp16 + write": [("preprocess/token_cache.py", "write_token_file")],
}


def write_test_video(path: Path, n: int, w: int = 640, h: int = 480) -> Path:
    """An n-frame ``mp4v`` video of smooth moving content (what OpenCV writes everywhere)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (w, h))
    if not writer.isOpened():
        raise SystemExit(f"this OpenCV build cannot write mp4v into {path}")
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        rgb = np.stack([127 + 90 * np.sin((xx + 7 * i) / 41.0), 127 + 90 * np.cos(yy / 29.0 + 0.05 * i),
                        127 + 60 * np.sin((xx + yy) / 53.0 - 0.03 * i)], -1)
        writer.write(np.clip(rgb, 0, 255).astype(np.uint8))
    writer.release()
    return path


def _stage_times(stats) -> dict[str, float]:
    """Cumulative seconds per :data:`STAGES` entry from a ``pstats.Stats``. Attention and MLP share the name
    ``forward`` in one file: they are told apart by their line (the class's ``def forward``)."""
    import inspect

    from model.streamvggt.layers import Attention, Mlp

    lines = {"Attention": inspect.getsourcelines(Attention.forward)[1],
             "Mlp": inspect.getsourcelines(Mlp.forward)[1]}
    out = dict.fromkeys(STAGES, 0.0)
    for (file, line, name), (_, _, _, cum, _) in stats.stats.items():
        for stage, specs in STAGES.items():
            for spec in specs:
                if file.endswith(spec[0]) and name == spec[1] and (len(spec) < 3 or line == lines[spec[2]]):
                    out[stage] += cum
    return out


def speed_run(video: Path, out: Path, window: int, chunk: int, threads: int) -> dict:
    """``python -m preprocess.extract_tokens <video> --backbone tiny`` in this process under cProfile: wall
    seconds, frames/s, and the cumulative seconds of each stage."""
    import cProfile
    import pstats

    torch.set_num_threads(threads)
    args = [str(video), "--backbone", "tiny", "--device", "cpu", "--out", str(out), "--window", str(window),
            "--chunk-size", str(chunk), "--no-progress", "-q"]
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    try:
        ex.main(args)
    except SystemExit as e:  # cli_main ends in sys.exit
        if e.code not in (0, None):
            raise
    prof.disable()
    wall = time.perf_counter() - t0
    n = len(list(out.glob(f"*{SUFFIX}")))
    stages = _stage_times(pstats.Stats(prof))
    return {"window": window, "chunk": chunk, "threads": threads, "frames": n, "wall_s": wall,
            "frames_per_s": n / wall, "stages_s": stages}


def speed_benchmark(n: int, configs: list[tuple[int, int]], threads: int, work: Path) -> list[dict]:
    """Token extraction of an n-frame 640x480 video with the tiny backbone, per (window, chunk) config."""
    work.mkdir(parents=True, exist_ok=True)
    video = write_test_video(work / f"clip_{n}.mp4", n)
    rows = []
    for window, chunk in configs:
        out = work / f"tokens_w{window}_c{chunk}"
        rows.append(speed_run(video, out, window, chunk, threads))
        shutil.rmtree(out)
        r = rows[-1]
        print(f"  window {window:4d} chunk {chunk:2d}: {r['frames_per_s']:6.2f} frames/s ({r['wall_s']:.1f} s for "
              f"{r['frames']} frames)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        a = argv[1:]
        memory_child(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]), a[5])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=8, help="frames for the storage comparison (960x536 inputs)")
    p.add_argument("--width", type=int, default=518, help="network input width for both parts (518 -> 518x294)")
    p.add_argument("--window", type=int, default=16, help="KV-cache window (past frames)")
    add_chunk_size_arg(p, 1, "frames per backbone call (extractor default 1)")
    p.add_argument("--mem-frames", type=int, nargs=2, default=[50, 200], help="video lengths for the memory part")
    p.add_argument("--repeats", type=int, default=3, help="timing passes for write/read (best is reported)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 avoids thread-barrier stalls on a shared machine; same for both)")
    p.add_argument("--full-width-frames", type=int, default=3,
                   help="frames for the storage-only comparison at the official token width (0 = skip)")
    p.add_argument("--skip-storage", action="store_true", help="only run the memory part")
    p.add_argument("--skip-memory", action="store_true", help="only run the storage part")
    p.add_argument("--speed", action="store_true",
                   help="(3) only: frames/s and where the time goes, tiny backbone on a 640x480 video (minutes)")
    p.add_argument("--speed-frames", type=int, default=160, help="video length for --speed")
    p.add_argument("--speed-configs", nargs="+", default=["128:1", "128:8", "32:1", "32:8", "16:8"],
                   help="WINDOW:CHUNK pairs for --speed (extract_tokens --window / --chunk-size)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    summary: dict = {"threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="bench_tokens_") as tmp:
        work = Path(tmp)
        if args.speed:
            configs = [tuple(int(v) for v in c.split(":")) for c in args.speed_configs]
            print(f"token extraction, tiny backbone, {args.speed_frames} frames 640x480 (mp4v), input "
                  f"{args.width} wide, {os.cpu_count()} CPUs, {args.threads} torch threads, load "
                  f"{os.getloadavg()[0]:.1f}:", flush=True)
            rows = speed_benchmark(args.speed_frames, configs, args.threads, work / "speed")
            summary["speed"] = rows
            print(f"  {'window:chunk':>12s} {'frames/s':>9s} " + " ".join(f"{k.strip()[:14]:>14s}" for k in STAGES))
            for r in rows:
                print(f"  {r['window']:>7d}:{r['chunk']:<4d} {r['frames_per_s']:9.2f} " + " ".join(
                    f"{100 * v / r['wall_s']:13.1f}%" for v in r["stages_s"].values()))
            print(json.dumps(summary))
            return 0
        if not args.skip_storage:
            r = storage_benchmark(args.frames, args.width, args.window, args.chunk_size, work / "storage",
                                  args.repeats)
            summary["storage"] = r
            print(f"storage ({r['frames']} frames, input {r['input_hw']} tokens x dim, depth {r['depth']}, "
                  f"width {r['embed_dim']}):")
            print(f"  {'':10s} {'MB/frame':>9s} {'write s/fr':>11s} {'read s/fr':>10s} {'read+fp32':>10s} "
                  f"{'extract s/fr':>13s}")
            for k in ("published", "ours"):
                print(f"  {k:10s} {r[k + '_bytes'] / 1e6:9.3f} {r[k + '_write_s']:11.5f} {r[k + '_read_s']:10.5f} "
                      f"{r[k + '_read_fp32_s']:10.5f} {r[k + '_extract_s']:13.3f}")
            print(f"  size ratio published/ours: {r['published_bytes'] / r['ours_bytes']:.2f}x; write speed-up "
                  f"{r['published_write_s'] / r['ours_write_s']:.2f}x; read speed-up "
                  f"{r['published_read_s'] / r['ours_read_s']:.2f}x")
        if not args.skip_storage and args.full_width_frames > 0:
            r = full_width_storage(args.full_width_frames, work / "full_width", args.repeats)
            summary["full_width_storage"] = r
            print(f"storage only, official token size ({r['num_tokens']} x {r['token_dim']}, random tokens):")
            for k, label in (("published", "published"), ("ours", "ours fp16"), ("int8", "ours int8")):
                print(f"  {label:10s} {r[k + '_bytes'] / 1e6:9.2f} MB/frame, write {r[k + '_write_s']:.4f} s/frame, "
                      f"read {r[k + '_read_s']:.4f} s/frame")
            print(f"  size ratio {r['published_bytes'] / r['ours_bytes']:.2f}x; write speed-up "
                  f"{r['published_write_s'] / r['ours_write_s']:.2f}x; read speed-up "
                  f"{r['published_read_s'] / r['ours_read_s']:.2f}x")
            print(f"  int8: size ratio {r['published_bytes'] / r['int8_bytes']:.2f}x (vs fp16 "
                  f"{r['ours_bytes'] / r['int8_bytes']:.2f}x); write speed-up "
                  f"{r['published_write_s'] / r['int8_write_s']:.2f}x; read speed-up "
                  f"{r['published_read_s'] / r['int8_read_s']:.2f}x; error relative L2 {r['int8_rel_l2_error']:.2e}, "
                  f"max abs {r['int8_max_abs_error']:.3g} (N(0,1) tokens)")
        if not args.skip_memory:
            rows = memory_benchmark(list(args.mem_frames), args.width, args.window, args.chunk_size,
                                               work / "memory")
            summary["memory"] = rows
            print(f"peak memory, tiny config, window {args.window}, width {args.width}:")
            for row in rows:
                print(f"  {row['frames']:4d} frames: peak RSS during extraction {row['extract_peak_mb']:8.1f} MB "
                      f"(RSS at its start {row['start_mb']:.1f} MB, +{row['extract_peak_mb'] - row['start_mb']:.1f} MB;"
                      f" process peak incl. imports {row['process_peak_mb']:.1f} MB); {row['s_per_frame']:.3f} s/frame")
            a, b = rows[0], rows[-1]
            grow_a, grow_b = a["extract_peak_mb"] - a["start_mb"], b["extract_peak_mb"] - b["start_mb"]
            print(f"  ratio {b['frames']}/{a['frames']} frames: extraction peak "
                  f"{b['extract_peak_mb'] / a['extract_peak_mb']:.3f}x, growth over its start "
                  f"{grow_b / max(grow_a, 1e-9):.3f}x, process peak {b['process_peak_mb'] / a['process_peak_mb']:.3f}x"
                  + ("" if a["peak_reset"] else " (peak reset unavailable: whole-process peaks)"))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
