"""Benchmark (not a test): training throughput of our data path vs the published one, same decoder.

Ours (``train.py``): ``training.dataset.SceneDataset`` + ``collate_samples``: 4 cached layers (4, 11, 17, 23) per
frame in fp16, memory-mapped (``preprocess.token_cache``); the frame as uint8 on the network grid; compact targets
(index maps + feature rows, :mod:`training.targets`), expanded per pixel on the device; host memory kept for reuse
(``utils.host_memory``).

Published (4DLangVGGT ``MultiIMGDataset`` + ``collate_fn_img`` + its training loop, re-implemented here from their
description: :class:`PublishedData`): one pickled dict per frame with all 24 aggregator layers in fp32
(``aggregated_tokens_list``, each (1, 1, 5+P, 2048)), unpickled at every step; the whole ``_s.npy``/``_f.npy``
pair read and gathered per pixel on the CPU into dense float32 targets + masks; each layer concatenated along the
frame axis; the loop decodes the frames with PIL and moves all 24 layers, the frames and the targets to the device,
where the DPT reads four layers. The benchmark writes those pickles into its own temporary folder (the only place in
this project where a pickle is written or read).

Reported, per path: samples per wall second and per CPU second of the data path (the loader and the host-side work
of a step; with a GPU also the copies and the device-side work; see :class:`PathRun`) and of full training steps
(data + device-side work + decoder forward/backward + AdamW, ``train.py``'s CPU path on the CPU). Every
measurement runs in a fresh process (the published path's 150 MB pickles leave the allocator in a state that
slows whatever runs next), ours and published alternating for ``--rounds`` rounds, so a change of the machine's
load hits both; in each the first epoch is a warm-up (page cache, allocator) and is not timed. The speed-up is the
ratio of the medians, and per round.

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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.decoder import DecoderConfig, SemanticBridgingDecoder  # noqa: E402
from preprocess.crop import FramePreprocessor  # noqa: E402
from preprocess.frames import FrameRef, read_frame_published  # noqa: E402
from preprocess.token_cache import write_scene_meta, write_token_file  # noqa: E402
from training.dataset import SceneDataset, collate_samples  # noqa: E402
from training.loss import compute_loss  # noqa: E402
from training.schedule import param_groups  # noqa: E402
from training.targets import batch_to_device, expand_targets  # noqa: E402
from utils.device import resolve_device  # noqa: E402
from utils.host_memory import keep_freed_memory  # noqa: E402

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


class PublishedData(Dataset):
    """The published data path, re-implemented from its description (4DLangVGGT ``MultiIMGDataset``,
    ``collate_fn_img`` and the frame loading of its training loop): per sample the pickled dict of all 24 fp32
    layers, the whole ``_s.npy`` / ``_f.npy`` pair and a dense per-pixel gather on the CPU into ``clip_feats``
    (3 levels, k, H, W) float32 + ``seg_maps`` (3, 1, H, W) bool (index -1 reads the last row; the mask removes
    it); batches concatenate each layer along the frame axis; the training loop decodes the frames with PIL
    (``load_and_preprocess_images``, mode ``crop``) and moves everything to the device."""

    def __init__(self, scene: Path, target_width: int = 518) -> None:
        self.scene = scene
        self.keys = sorted(p.stem for p in (scene / "rgb" / "2x").glob("*.png"))
        self.pre = FramePreprocessor(target_width=target_width, mode="crop")  # the published loop's: 518

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict:
        key, feat_dir = self.keys[i], self.scene / "clip_features-language_features_dim3"
        tokens = np.load(self.scene / "streamvggt_token" / f"{key}.npy", allow_pickle=True).item()  # trusted: ours
        seg = torch.from_numpy(np.load(feat_dir / f"{key}_s.npy"))  # (4, H, W) float32
        table = torch.from_numpy(np.load(feat_dir / f"{key}_f.npy"))  # (N, k)
        H, W = seg.shape[1:]
        ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        index = seg[:, ys.reshape(-1, 1), xs.reshape(-1, 1)].squeeze(-1).long()  # (4, H*W), per-pixel gather
        feats = torch.stack([table[index[lvl]].reshape(H, W, -1).permute(2, 0, 1) for lvl in (1, 2, 3)])
        return {"clip_feats": feats, "seg_maps": (seg != -1)[1:4].unsqueeze(1),
                "tokens": tokens["aggregated_tokens_list"], "patch_start_idx": tokens["patch_start_idx"],
                "image_path": self.scene / "rgb" / "2x" / f"{key}.png"}


def collate_published(samples: list[dict]) -> dict:
    """24 layers, each the samples' (1, 1, P, 2C) arrays concatenated along the frame axis -> (1, B, P, 2C)."""
    out = {"tokens": [torch.cat([torch.from_numpy(s["tokens"][i]) for s in samples], dim=1) for i in range(DEPTH)]}
    for k in ("clip_feats", "seg_maps"):
        out[k] = torch.stack([s[k] for s in samples])
    out["image_path"] = [s["image_path"] for s in samples]
    return out


def published_frames(batch: dict, pre: FramePreprocessor) -> dict:
    """The host side of the published loop's step: the frames decoded with PIL and prepared (float32)."""
    frames = [pre.prepare(read_frame_published(FrameRef(p.stem, 0, p)))[0] for p in batch["image_path"]]
    return batch | {"frame": torch.stack(frames)}


def published_to_device(batch: dict, device: torch.device) -> dict:
    """The device side of the published loop's step: every layer, the frames and the dense targets moved; returned
    in the names our loss reads."""
    return {"tokens": [t.to(device, non_blocking=True)[0] for t in batch["tokens"]],
            "frame": batch["frame"].to(device), "lang_target": batch["clip_feats"].to(device),
            "lang_mask": batch["seg_maps"].to(device)[:, :, 0]}


def ours_to_device(batch: dict, device: torch.device) -> dict:
    """The device side of our step (``train.py``): the compact batch moved (tokens converted to float32 there),
    the dense targets expanded there."""
    return expand_targets(batch_to_device(batch, device))


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
    epoch and adds its wall and CPU seconds when ``timed``.

    ``host`` is the CPU work of a step before anything reaches the device (ours: none beyond the loader; the
    published loop: decoding the frames), ``device`` the moves and what runs on the device (ours: float32
    tokens and the per-pixel target gather). The data path (``model`` None) is the loader plus ``host``, plus
    ``device`` when the device is not the CPU: on the CPU there is no host-to-device copy to time, and the
    device-side conversions and gathers are a GPU's (a few kernels) in the setting this path is made for, not a
    cost of feeding it; ``train.py``'s CPU path (tokens converted while they are stacked, targets gathered on
    the CPU) is what the full steps time."""

    def __init__(self, name: str, scene: Path, model: torch.nn.Module | None, device: torch.device, args) -> None:
        self.name, self.scene, self.model, self.device, self.args = name, scene, model, device, args
        if name == "ours":
            keep_freed_memory()  # as train.py
            ds = SceneDataset([scene], video_subdir=None, train_on_eval_frames=True, read_tokens_in_collate=True)
            # as train.py: tokens in their storage dtype, on the CPU converted to float32 while they are stacked
            cpu_train = device.type == "cpu" and model is not None
            collate = functools.partial(collate_samples, token_dtype=torch.float32 if cpu_train else None)
            self.host = lambda batch: batch
            self.device_side = functools.partial(ours_to_device, device=device)
            self.pick = list(range(len(LAYERS)))
        else:
            ds, collate = PublishedData(scene, target_width=args.grid[1] * 14), collate_published
            self.host = functools.partial(published_frames, pre=ds.pre)
            self.device_side = functools.partial(published_to_device, device=device)
            self.pick = list(LAYERS)
        self.with_device = model is not None or device.type != "cpu"
        self.loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                 collate_fn=collate, drop_last=True, pin_memory=device.type == "cuda",
                                 persistent_workers=args.workers > 0, generator=torch.Generator().manual_seed(0))
        self.opt = torch.optim.AdamW(param_groups(model, 1e-4), lr=1e-5) if model is not None else None
        self.n, self.wall, self.cpu = 0, 0.0, 0.0

    def epoch(self, label: str, timed: bool) -> None:
        if self.args.cold:
            evict_page_cache(self.scene)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0, c0, n = time.perf_counter(), time.process_time(), 0
        for batch in tqdm(self.loader, desc=f"{self.name} {label}", leave=False):
            batch = self.host(batch)
            n += len(batch["frame"])
            if not self.with_device:
                continue
            batch = self.device_side(batch)  # the model's float32 tokens, frame and dense targets
            if self.model is not None:
                toks = batch["tokens"]
                out = self.model([toks[i] for i in self.pick], batch["frame"], PSI)
                loss = compute_loss(out, batch)["loss"]
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if timed:
            self.wall += time.perf_counter() - t0
            self.cpu += time.process_time() - c0
            self.n += n


def measure(args) -> dict:
    """One path (``args.path``) in this process: ``args.epochs`` epochs, the first not timed."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = None
    if args.mode == "train":
        cfg_kw = {"dim_in": args.dim, "layers": LAYERS, "rgb": True}
        torch.manual_seed(0)
        model = SemanticBridgingDecoder(DecoderConfig.tiny(**cfg_kw) if args.decoder == "tiny"
                                        else DecoderConfig(**cfg_kw)).to(device)
    run = PathRun(args.path, Path(args.workdir) / "scene", model, device, args)
    for epoch in range(args.epochs):
        run.epoch(f"{args.mode} epoch {epoch + 1}", timed=epoch > 0)
    return {"samples_per_s": run.n / run.wall, "samples_per_cpu_s": run.n / run.cpu, "device": str(device)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=16, help="frames in the synthetic scene")
    p.add_argument("--grid", type=int, nargs=2, default=(21, 37), help="patch grid (h, w); 21x37 = 294x518 px")
    p.add_argument("--dim", type=int, default=2048, help="token width (2 x embed dim)")
    p.add_argument("--decoder", choices=["tiny", "default"], default="tiny", help="decoder widths")
    p.add_argument("--batch-size", type=int, default=2, help="samples per step")
    p.add_argument("--epochs", type=int, default=3, help="epochs per measurement (the first is not timed)")
    p.add_argument("--rounds", type=int, default=3,
                   help="measurements per path, alternating ours / published, each in a fresh process")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (both paths)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--cold", action="store_true",
                   help="evict the scene's files from the page cache before every epoch (disk-bound reads, as "
                   "for a dataset larger than RAM)")
    p.add_argument("--skip-train", action="store_true", help="only measure the data path")
    p.add_argument("--workdir", default=None, help="where to write the scene (default: a temp folder, removed)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--path", choices=["ours", "published"], default=None, help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["data", "train"], default="data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.path:  # one measurement, in a process of its own (run by the parent below)
        print(json.dumps(measure(args)))
        return {}
    tmp = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_train_data_"))
    scene = tmp / "scene"
    try:
        if not (scene / "tokens" / "meta.json").is_file() or len(list((scene / "rgb" / "2x").glob("*.png"))) \
                != args.frames:
            shutil.rmtree(scene, ignore_errors=True)
            write_scene(scene, args.frames, tuple(args.grid), args.dim)
        results: dict = {"config": vars(args) | {"grid": list(args.grid)},
                         "ours_MB_per_frame": (scene / "tokens" / "000001.safetensors").stat().st_size / 2**20,
                         "published_MB_per_frame": (scene / "streamvggt_token" / "000001.npy").stat().st_size
                         / 2**20}
        passed = [a for a in (argv if argv is not None else sys.argv[1:])]
        for mode in ("data", "train")[: 1 if args.skip_train else 2]:
            rates: dict[str, list[dict]] = {"ours": [], "published": []}
            for r in range(args.rounds):
                for name in rates:
                    cmd = [sys.executable, "-m", "benchmarks.bench_train_data", *passed, "--workdir", str(tmp),
                           "--path", name, "--mode", mode]
                    done = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                          cwd=Path(__file__).resolve().parents[1])
                    rates[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
                    print(f"{mode} round {r + 1}/{args.rounds} {name}: "
                          f"{rates[name][-1]['samples_per_s']:.1f} samples/s", file=sys.stderr)
            for unit in ("s", "cpu_s"):
                key = f"samples_per_{unit}"
                ours = [m[key] for m in rates["ours"]]
                pub = [m[key] for m in rates["published"]]
                results[f"{mode}_ours_{key}"] = ours
                results[f"{mode}_published_{key}"] = pub
                results[f"{mode}_speedup_per_{unit}_median"] = statistics.median(ours) / statistics.median(pub)
                results[f"{mode}_speedup_per_{unit}_per_round"] = [a / b for a, b in zip(ours, pub, strict=True)]
        print(json.dumps(results, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return results
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
