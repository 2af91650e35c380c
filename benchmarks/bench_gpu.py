"""One-shot GPU benchmark (not a test): the figures of the README's GPU table, run by ``bash benchmarks/gpu.sh``.

On one CUDA device, with the full-size StreamVGGT and our full-size decoder, both with random weights:

1. aggregator frames/s at 518x294 in bf16 (autocast), streaming frame by frame and in chunks of 8, with a window
   of 128 past frames, after the cache has filled; achieved TFLOP/s from the published cost model (1.6 TFLOP for
   a frame with no past + 60 GFLOP per cached past frame at 518x294, the published StreamVGGT FLOP figures) against the
   card's dense bf16 peak;
2. peak GPU memory after streaming 100 and 1,000 frames (window 128: it must not grow with the video);
3. inference frames/s: backbone + our decoder + depth and camera heads per chunk of 8 (no file writing);

``--tiny`` runs the same code on the tiny config (CPU is fine) as a smoke test; no TFLOP/s then.
Prints one JSON object (and writes it with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.decoder import DecoderConfig, SemanticBridgingDecoder  # noqa: E402
from model.streamvggt.config import StreamVGGTConfig  # noqa: E402
from model.streamvggt.streamvggt import StreamVGGT  # noqa: E402

#: dense bf16 tensor-core peaks (TFLOP/s) of the cards this project is lent; others print no ratio
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
FRAME_TFLOP, PER_PAST_TFLOP = 1.6, 0.060  # published cost model at 518x294 (full-size aggregator)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def card_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def stream_frames(model: StreamVGGT, frames: int, chunk: int, window: int, hw: tuple[int, int],
                  device: torch.device, dtype: torch.dtype, timed_from: int) -> dict:
    """Stream ``frames`` random frames in chunks; time the frames from ``timed_from`` on (a full cache)."""
    cache = model.aggregator.new_cache(window)
    gen = torch.Generator(device=device).manual_seed(0)
    t_start = None
    done = 0
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        while done < frames:
            n = min(chunk, frames - done, timed_from - done if done < timed_from else chunk)
            if done >= timed_from and t_start is None:
                sync(device)
                t_start = time.perf_counter()
            images = torch.rand((1, n, 3, *hw), generator=gen, device=device)
            tokens, _ = model.aggregator(images, cache=cache)
            del tokens
            done += n
    sync(device)
    timed = frames - timed_from
    seconds = time.perf_counter() - (t_start or time.perf_counter())
    return {"frames": timed, "seconds": seconds, "frames_per_second": timed / seconds if seconds > 0 else None}


def tflops(frames_per_second: float | None, window: int) -> float | None:
    return None if frames_per_second is None else frames_per_second * (FRAME_TFLOP + PER_PAST_TFLOP * window)


def peak_memory(model: StreamVGGT, frames: int, window: int, hw: tuple[int, int], device: torch.device,
                dtype: torch.dtype) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    stream_frames(model, frames, 8, window, hw, device, dtype, timed_from=frames)
    return torch.cuda.max_memory_allocated(device) / 2**30


def inference_fps(model: StreamVGGT, decoder: torch.nn.Module, frames: int, window: int, hw: tuple[int, int],
                  device: torch.device, dtype: torch.dtype) -> dict:
    """Backbone + decoder + depth and camera heads, chunks of 8, as ``inference.predictor`` runs them."""
    from inference.pipeline import Frame
    from inference.predictor import LangVGGTPredictor
    from preprocess.crop import CropInfo

    pred = LangVGGTPredictor(decoder, model, None, window=window, geometry=True, device=device, dtype=dtype)
    crop = CropInfo.identity(hw)
    gen = torch.Generator().manual_seed(0)
    chunk_frames = [Frame(key=f"{i:06d}", index=i, rgb=None, image=torch.rand((3, *hw), generator=gen), crop=crop)
                    for i in range(8)]
    pred(chunk_frames, [True] * 8)  # warm-up (kernels, allocator)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(frames // 8):
        pred(chunk_frames, [True] * 8)
    sync(device)
    seconds = time.perf_counter() - t0
    return {"frames": frames // 8 * 8, "seconds": seconds, "frames_per_second": frames // 8 * 8 / seconds}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --tiny)")
    p.add_argument("--tiny", action="store_true", help="tiny config smoke run (any device)")
    p.add_argument("--frames", type=int, default=256, help="frames streamed per throughput run (timed after the "
                   "cache has filled)")
    p.add_argument("--window", type=int, default=128, help="past frames kept in the cache")
    p.add_argument("--memory-frames", type=int, nargs=2, default=(100, 1000), help="video lengths for peak memory")
    p.add_argument("--inference-frames", type=int, default=64, help="frames for the inference figure")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device (cuda unavailable): run on a GPU machine, or pass --tiny --device cpu")
    torch.manual_seed(0)
    if args.tiny:
        cfg, dcfg, hw, dtype = StreamVGGTConfig.tiny(), None, (42, 70), torch.float32
    else:
        cfg, dcfg, hw, dtype = StreamVGGTConfig(), DecoderConfig(), (294, 518), torch.bfloat16
    with torch.device(device):
        model = StreamVGGT(cfg).eval()
        decoder = SemanticBridgingDecoder(dcfg or DecoderConfig.tiny(dim_in=cfg.token_dim,
                                                                     layers=tuple(cfg.dpt_layers))).eval()
    name, peak = card_peak(device)
    warm = min(args.window, args.frames // 2)
    out: dict = {"device": name, "config": "tiny" if args.tiny else "full-size (random weights)",
                 "input_hw": list(hw), "dtype": str(dtype).removeprefix("torch."), "window": args.window}
    for label, chunk in (("streaming", 1), ("chunks_of_8", 8)):
        r = stream_frames(model, args.frames + warm, chunk, args.window, hw, device, dtype, timed_from=warm)
        if not args.tiny:
            r["tflops"] = tflops(r["frames_per_second"], args.window)
            r["fraction_of_peak"] = r["tflops"] / peak if peak and r["tflops"] else None
        out[f"aggregator_{label}"] = r
    out["peak_memory_gib"] = {str(n): peak_memory(model, n, args.window, hw, device, dtype)
                              for n in args.memory_frames}
    out["inference"] = inference_fps(model, decoder, args.inference_frames, args.window, hw, device, dtype)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
