"""Benchmark (not a test): training throughput of our data path vs the published one, same decoder.

Ours: 4 cached layers (4, 11, 17, 23) per frame, fp16 safetensors, memory-mapped (``preprocess.token_cache``).
Published (4DLangVGGT ``MultiIMGDataset``): one pickled dict per frame with all 24 aggregator layers in
fp32 (``aggregated_tokens_list``, each (1, 1, 5+P, 2048)), unpickled at every step; all 24 layers are
collated and moved to the device, the DPT then reads four of them. The benchmark recreates those pickles
in its own temporary folder (the only place in this project where a pickle is written or read).

Frames and targets go through the same code in both paths (``training.dataset.SceneDataset``: uint8 frames,
compact index maps + feature tables, :mod:`training.targets`), so the difference is the token path alone.
Reported: samples per wall second and per CPU second of the data path alone (load + collate + move to the device,
as ``train.py`` does it: tokens as float32, converted while they are stacked on the CPU; the frame as float32; the
targets compact) and of full training steps (data + per-pixel target gather on the device + decoder
forward/backward + AdamW). The two paths alternate epoch by epoch (ours, published, ours, ...), so a change of the
machine's load hits both; the first epoch of each is a warm-up (page cache, allocator) and is not timed.

    python -m benchmarks.bench_train_data --threads 1               # real token size (37x21 grid, 2048-d, 24 layers)
    python -m benchmarks.bench_train_data --threads 1 --skip-train  # the data path alone
    python -m benchmarks.bench_train_data --decoder default         # the published decoder widths (slow on CPU)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.decoder import DecoderConfig, SemanticBridgingDecoder  # noqa: E402
from preprocess.crop import FramePreprocessor  # noqa: E402
from preprocess.token_cache import write_scene_meta, write_token_file  # noqa: E402
from training.dataset import SceneDataset, collate_samples  # noqa: E402
from training.loss import compute_loss  # noqa: E402
from training.schedule import param_groups  # noqa: E402
from training.targets import batch_to_device, expand_targets  # noqa: E402
from utils.device import resolve_device  # noqa: E402

LAYERS = (4, 11, 17, 23)
DEPTH = 24
PSI = 5


def write_scene(root: Path, n_frames: int, grid: tuple[int, int], dim: int, seed: int = 0) -> None:
    """Frames, both token formats and dim-3 targets for a random scene whose frames are exactly the input size."""
    rng = np.random.default_rng(seed)
    gh, gw = grid
    H, W = gh * 14, gw * 14
    crop = FramePreprocessor(target_width=W, mode="crop").plan((H, W))
    (root / "rgb" / "2x").mkdir(parents=True)
    feat_dir = root / "clip_features-language_features_dim3"
    feat_dir.mkdir()
    pub_dir = root / "streamvggt_token"
    pub_dir.mkdir()
    frames = []
    for t in tqdm(range(n_frames), desc="writing scene", leave=False):
        key = f"{t + 1:06d}"
        rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "rgb" / "2x" / f"{key}.png"), rgb)
        layers = [rng.standard_normal((PSI + gh * gw, dim), dtype=np.float32) for _ in range(DEPTH)]
        meta = {"backbone": "bench", "token_dim": dim, "grid": [gh, gw], "patch_start_idx": PSI,
                "patch_size": 14, "crop": crop.to_dict(), "frame_key": key, "frame_index": t}
        write_token_file(root / "tokens" / f"{key}.safetensors",
                         [torch.from_numpy(layers[i]).half() for i in LAYERS], LAYERS, meta)
        # the published format: a pickled dict of all 24 layers, fp32, (1, 1, 5+P, 2C) each
        np.save(pub_dir / f"{key}.npy", {"aggregated_tokens_list": [a[None, None] for a in layers],
                                         "patch_start_idx": PSI}, allow_pickle=True)
        seg = np.stack([rng.integers(-1, 4, size=(H, W))] * 4).astype(np.float32)
        for lvl in range(1, 4):
            seg[lvl] = np.where(seg[lvl] >= 0, seg[lvl] + 4 * (lvl - 1), -1)
        np.save(feat_dir / f"{key}_s.npy", seg)
        f = rng.standard_normal((12, 3)).astype(np.float32)
        np.save(feat_dir / f"{key}_f.npy", f / np.linalg.norm(f, axis=1, keepdims=True))
        frames.append({"key": key, "index": t})
    write_scene_meta(root / "tokens", {"backbone": "bench", "layers": list(LAYERS), "token_dim": dim,
                                       "grid": [gh, gw], "patch_start_idx": PSI, "patch_size": 14,
                                       "crop": crop.to_dict(), "dtype": "fp16", "num_tokens": PSI + gh * gw,
                                       "frames": frames, "complete": True})


class PublishedTokens(SceneDataset):
    """Same frames/targets, tokens from the published per-frame pickles (all 24 layers, fp32)."""

    def load_tokens(self, scene_index: int, key: str) -> list[torch.Tensor]:
        path = self.scenes[scene_index].root / "streamvggt_token" / f"{key}.npy"
        d = np.load(path, allow_pickle=True).item()  # trusted: written by this benchmark
        return [torch.from_numpy(a)[0, 0] for a in d["aggregated_tokens_list"]]


def evict_page_cache(root: Path) -> None:
    """Drop the page cache of every file under ``root`` (posix_fadvise DONTNEED; no root needed), so the next
    epoch reads from disk as a dataset larger than RAM would (the published 6-scene set is ~600 GB of pickles)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class PathRun:
    """One data path (ours or published) and, for full steps, its own decoder + optimizer; :meth:`epoch` runs one
    epoch and adds its wall and CPU seconds when ``timed``."""

    def __init__(self, name: str, ds: SceneDataset, model: torch.nn.Module | None, device: torch.device,
                 args) -> None:
        self.name, self.ds, self.model, self.device, self.args = name, ds, model, device, args
        # as train.py: tokens converted to float32 while they are stacked on the CPU, on the device elsewhere
        collate = functools.partial(collate_samples, token_dtype=torch.float32 if device.type == "cpu" else None)
        self.loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                 collate_fn=collate, drop_last=True, pin_memory=device.type == "cuda",
                                 persistent_workers=args.workers > 0, generator=torch.Generator().manual_seed(0))
        self.opt = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-5) if model is not None else None
        self.pick = list(LAYERS) if isinstance(ds, PublishedTokens) else list(range(len(LAYERS)))
        self.n, self.wall, self.cpu = 0, 0.0, 0.0

    def epoch(self, label: str, timed: bool) -> None:
        if self.args.cold:
            evict_page_cache(self.ds.scenes[0].root)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0, n = time.perf_counter(), time.process_time(), 0
        for batch in tqdm(self.loader, desc=f"{self.name} {label}", leave=False):
            batch = batch_to_device(batch, self.device)  # all layers the path loads, as float32
            toks = batch["tokens"]
            if self.model is not None:
                out = self.model([toks[i] for i in self.pick], batch["frame"], PSI)
                loss = compute_loss(out, expand_targets(batch))["loss"]
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
            else:
                _ = [toks[i].sum() for i in self.pick]
            n += batch["frame"].shape[0]
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if timed:
            self.wall += time.perf_counter() - t0
            self.cpu += time.process_time() - c0
            self.n += n

    def rates(self) -> tuple[float, float]:
        """(samples per wall second, samples per CPU second of this process); the CPU-time rate is the steadier
        one on a shared machine."""
        return self.n / self.wall, self.n / self.cpu


def run_paths(label: str, paths: list[PathRun], epochs: int) -> None:
    """``epochs`` epochs of every path, alternating path by path; the first of each is not timed."""
    for epoch in range(epochs):
        for p in paths:
            p.epoch(f"{label} epoch {epoch + 1}", timed=epoch > 0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=8, help="frames in the synthetic scene")
    p.add_argument("--grid", type=int, nargs=2, default=(21, 37), help="patch grid (h, w); 21x37 = 294x518 px")
    p.add_argument("--dim", type=int, default=2048, help="token width (2 x embed dim)")
    p.add_argument("--decoder", choices=["tiny", "default"], default="tiny", help="decoder widths")
    p.add_argument("--batch-size", type=int, default=2, help="samples per step")
    p.add_argument("--epochs", type=int, default=5, help="epochs per path, alternating (the first is not timed)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cold", action="store_true",
                   help="evict the scene's files from the page cache before every epoch (disk-bound reads, as "
                   "for a dataset larger than RAM)")
    p.add_argument("--skip-train", action="store_true", help="only measure the data path")
    p.add_argument("--workdir", default=None, help="where to write the scene (default: a temp folder, removed)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_train_data_"))
    scene = tmp / "scene"
    try:
        if not (scene / "tokens" / "meta.json").is_file():
            write_scene(scene, args.frames, tuple(args.grid), args.dim)
        sizes = {"ours_MB_per_frame": (scene / "tokens" / "000001.safetensors").stat().st_size / 2**20,
                 "published_MB_per_frame": (scene / "streamvggt_token" / "000001.npy").stat().st_size / 2**20}
        ours = SceneDataset([scene], video_subdir=None, train_on_eval_frames=True)
        pub = PublishedTokens([scene], video_subdir=None, train_on_eval_frames=True)
        cfg_kw = {"dim_in": args.dim, "layers": LAYERS, "rgb": True}
        cfg = DecoderConfig.tiny(**cfg_kw) if args.decoder == "tiny" else DecoderConfig(**cfg_kw)
        results: dict = {"device": str(device), "config": vars(args) | {"grid": list(args.grid)}, **sizes}
        for label, model_on in (("data", False), ("train", True))[: 1 if args.skip_train else 2]:
            paths = []
            for name, ds in (("ours", ours), ("published", pub)):
                model = None
                if model_on:
                    torch.manual_seed(0)
                    model = SemanticBridgingDecoder(cfg).to(device)
                paths.append(PathRun(name, ds, model, device, args))
            run_paths(label, paths, args.epochs)
            for name, path in zip(("ours", "published"), paths, strict=True):
                wall, cpu = path.rates()
                results[f"{label}_{name}_samples_per_s"] = wall
                results[f"{label}_{name}_samples_per_cpu_s"] = cpu
            for unit in ("s", "cpu_s"):
                results[f"{label}_speedup_per_{unit}"] = (results[f"{label}_ours_samples_per_{unit}"]
                                                         / results[f"{label}_published_samples_per_{unit}"])
        print(json.dumps(results, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return results
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
