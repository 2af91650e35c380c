"""Memory of one global-attention window of a windowed backbone (VGGT, PAGE-4D), per window size.

Global attention over a window of S frames: the 24 stored layers grow with S, the attention work with S^2.
Each window size runs in its own fresh process. On CPU the aggregator is built at the full width (1024, 16 heads,
frame size as given) with ``--depth`` blocks (default 2: the full 24-block, 1.26 B-parameter model is not built
on a shared CPU machine) and a conv patch embed; the peak resident memory of the forward is measured, and the
full model's figure is extrapolated: measured working set + the 22 further stored layers (S x P x 2048 x 4 B
each, fp32) + the fp32 weights (5.03 GB). On CUDA (``benchmarks/gpu.sh``) ``--depth 24 --dinov2`` builds the
full model with random weights (on the GPU) and reports ``torch.cuda.max_memory_allocated`` directly; ``--family``
picks the registered network (``page4d-mask`` adds the mask head and its biased global attention) and
``--heads camera depth`` runs the camera and depth heads too, as ``inference.run`` does on every window. A window
that does not fit is a row with ``"oom": true`` (the next sizes still run).

    python -m benchmarks.bench_backbone_windows --windows 2 4 8 --size 518x294
    python -m benchmarks.bench_backbone_windows --device cuda --depth 24 --dinov2 --dtype bf16 --windows 8 16 32 64 \
        --family page4d-mask --heads camera depth
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import time

import torch

from benchmarks.bench_backbone import read_status, reset_peak_rss

FULL_WEIGHTS_GB = 1_256_810_413 * 4 / 1e9  # PAGE-4D fp32 (VGGT-1B: 1,256,537,516 parameters)


def _one(args: argparse.Namespace, window: int, queue) -> None:
    try:
        queue.put(_measure(args, window))
    except torch.OutOfMemoryError as e:
        queue.put({"window": window, "family": args.family, "oom": True, "error": str(e).splitlines()[0]})


def _measure(args: argparse.Namespace, window: int) -> dict:
    torch.set_num_threads(args.threads)
    from model.registry import get_family

    w, h = (int(v) for v in args.size.split("x"))
    heads = tuple(args.heads)
    cfg = {"img_size": 518, "embed_dim": args.embed_dim, "depth": args.depth, "num_heads": args.num_heads,
           "patch_embed": "dinov2_vitl14_reg" if args.dinov2 else "conv", "enable_camera": "camera" in heads,
           "enable_depth": "depth" in heads, "enable_point": False, "enable_track": False}
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.manual_seed(0)
    with torch.device(device):  # random weights made where they run (the full model: seconds on a GPU)
        model = get_family(args.family).build(cfg).eval()
    images = torch.rand(1, window, 3, h, w, device=device)
    rss_before = reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        out = model(images, heads=heads)
    if device.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    p = out["tokens"][0].shape[2]
    row = {"window": window, "family": args.family, "heads": list(heads), "tokens_per_frame": p,
           "depth": args.depth, "seconds": secs}
    if device.type == "cuda":
        row["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 1e9
    else:
        work = (read_status("VmHWM") - rss_before) / 1e3  # GB over the model and inputs
        layer_gb = window * p * 2 * args.embed_dim * 4 / 1e9  # one stored layer, fp32
        row.update(measured_gb=work, layer_gb=layer_gb,
                   full_model_estimate_gb=FULL_WEIGHTS_GB + work + (24 - args.depth) * layer_gb)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_backbone_windows", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--windows", type=int, nargs="+", default=[2, 4, 8], help="window sizes (frames) to measure")
    p.add_argument("--size", default="518x294", help="frame size WxH (multiples of 14)")
    p.add_argument("--family", default="vggt", choices=["vggt", "page4d", "page4d-mask"],
                   help="the registered windowed network (page4d-mask: with the mask head after frame block 9)")
    p.add_argument("--heads", nargs="*", default=[], choices=["camera", "depth"],
                   help="heads run after the aggregator (inference runs camera and depth); default none")
    p.add_argument("--depth", type=int, default=2, help="aggregator blocks built (24 = the full model)")
    p.add_argument("--embed-dim", type=int, default=1024, help="aggregator width (1024 = the full model)")
    p.add_argument("--num-heads", type=int, default=16, help="attention heads (16 = the full model)")
    p.add_argument("--dinov2", action="store_true", help="the full DINOv2 patch embed (else one conv)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast precision")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows = []
    for window in args.windows:
        q = ctx.Queue()
        proc = ctx.Process(target=_one, args=(args, window, q))
        proc.start()
        row = None
        while row is None:
            try:
                row = q.get(timeout=5)
            except queue.Empty:
                if not proc.is_alive():  # died without a row (killed, CUDA error): say so, go on
                    row = {"window": window, "family": args.family, "error": f"exit code {proc.exitcode}"}
        proc.join()
        rows.append(row)
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
