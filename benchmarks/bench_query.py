"""Query speed and agreement: ``eval.query``'s latent-grid path (the default) vs the exact per-pixel path.

``python benchmarks/bench_query.py``                       (demo output at outputs/demo if there, else synthetic)
``python benchmarks/bench_query.py --demo outputs/demo``   (the output of ``bash scripts/demo.sh``)
``python benchmarks/bench_query.py --synthetic``           (64 frames 200x150, random autoencoder, built here)
Options: ``--repeat N`` grid runs, ``--grid-size``, ``--batch``, ``--threads``, ``--json out.json``, ``--work DIR``,
``--min-agreement`` (exit 1 below it). The ratio is printed with the machine: CPU count, torch threads, the CPU
kernels torch chose and the load average (the exact path's decoding is matrix products that scale with cores and
vector width; the grid path's pooling and pictures much less, so the ratio is a property of the machine too).

Both paths run ``eval.query.query_fields`` in this process on the same fields with every output on (heatmap,
mask and overlay PNGs, overlay.mp4, the relevancy PLY when the fields have geometry); the timings are of that
call only (no interpreter start-up, no model loading). Reported:

* one query over all frames: exact time, grid time (median of ``--repeat`` runs), the ratio;
* all queries at once (the exact path decodes each pixel once for all of them): masks of every frame and query,
  grid vs exact: share of equal pixels, IoU of the two masks, frames whose chosen level differs;
* per query, the IoU against the ground truth (the demo scene's COCO annotations, or the synthetic objects)
  of both paths and its change in points.

Demo output: the fields, ``<demo>/autoencoder`` and the scene's annotations; the text encoder is the one the demo
used without weights (``--hash-text``). Synthetic: moving objects whose 3-d latents are well-separated unit
vectors (icosahedron vertices) blurred at the edges (like upsampled decoder outputs) plus noise, the small level
splitting each object into two parts; a seeded random ``FeatureAutoencoder`` (512 -> 3) whose decoder is fitted
in < 1 s to send each label's latent to the hash embedding of its name (an unfitted random decoder maps every
latent to nearly one direction, which makes every relevancy map flat); queries and negatives use the same hash
text encoder; geometry (depth, cameras, points) is written too, so the relevancy PLY is part of the timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SYNTH_NAMES = ("red ball", "green box", "blue mug", "yellow duck", "glass")


# ----------------------------------------------------------------------------------------------- synthetic
def synthetic_labels(i: int, h: int, w: int) -> dict[str, np.ndarray]:
    """Per level an int label map (0 = table, 1.. = objects / parts) of frame ``i``; objects move and overlap."""
    yy, xx = np.mgrid[:h, :w]
    t = i / 8.0
    objs = [  # (kind, cx, cy, rx, ry)
        ("disc", w * (0.25 + 0.15 * np.sin(t)), h * 0.35, h * 0.16, h * 0.16),
        ("box", w * (0.62 + 0.08 * np.cos(t)), h * (0.55 + 0.1 * np.sin(t / 2)), w * 0.13, h * 0.2),
        ("disc", w * 0.5, h * (0.3 + 0.12 * np.sin(t / 3)), h * 0.11, h * 0.13),
        ("disc", w * (0.8 - 0.1 * np.sin(t / 2)), h * 0.25, h * 0.07, h * 0.07),
        ("box", w * (0.3 + 0.05 * np.cos(t)), h * 0.75, w * 0.08, h * 0.12),
    ]
    large = np.zeros((h, w), np.int64)
    middle = np.zeros((h, w), np.int64)
    small = np.zeros((h, w), np.int64)
    for j, (kind, cx, cy, rx, ry) in enumerate(objs):
        if kind == "disc":
            m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        else:
            m = (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry)
        large[m] = j + 1
        middle[m] = j + 1
        small[m] = np.where(yy[m] < cy, j + 1, j + 1 + len(objs))  # top half = the object, bottom = a part
    return {"small": small, "middle": middle, "large": large}


class SyntheticLatents:
    """Predictor for ``inference.pipeline.run_inference``: k=3 latent fields + flat geometry."""

    def __init__(self, h: int, w: int, n_labels: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.h, self.w = h, w
        # label -> unit latent: the 12 well-separated vertices of an icosahedron, randomly rotated
        phi = (1 + 5 ** 0.5) / 2
        ico = torch.tensor([[0, s1, s2 * phi] for s1 in (-1, 1) for s2 in (-1, 1)], dtype=torch.float32)
        ico = torch.cat([ico, ico.roll(1, dims=1), ico.roll(2, dims=1)])
        rot, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
        verts = F.normalize(ico @ rot, dim=-1)[torch.randperm(12, generator=g)]
        self.latents = verts[:n_labels]
        self.gen = g

    def field(self, labels: np.ndarray) -> torch.Tensor:
        x = self.latents[torch.from_numpy(labels)].permute(2, 0, 1)[None]  # (1, 3, H, W)
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # binomial blur: soft edges like upsampled outputs
        x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), k.view(1, 1, 1, 5).expand(3, 1, 1, 5), groups=3)
        x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), k.view(1, 1, 5, 1).expand(3, 1, 5, 1), groups=3)
        return x[0] + 0.03 * torch.randn(x.shape[1:], generator=self.gen)

    def __call__(self, frames, keep):
        from inference.geometry import fov_intrinsics
        from inference.pipeline import ChunkOutput

        s, h, w = len(frames), self.h, self.w
        per = [synthetic_labels(f.index, h, w) for f in frames]
        fields = {lvl: torch.stack([self.field(p[lvl]) for p in per]) for lvl in ("small", "middle", "large")}
        ext = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1).expand(s, 3, 4)
        K = torch.as_tensor(fov_intrinsics(1.0, 1.0, (h, w)), dtype=torch.float32).expand(s, 3, 3)
        return ChunkOutput(fields=fields, rgb=torch.stack([f.image for f in frames]),
                           depth=torch.ones(s, h, w) + 0.1 * torch.rand(s, h, w, generator=self.gen),
                           conf=torch.full((s, h, w), 2.0), extrinsics=ext, intrinsics=K)


def build_synthetic(root: Path, frames: int, width: int, height: int, seed: int = 0):
    """Write the fields folder; return (fields dir, decode, encode_text, queries, gt {query: {frame key: mask}})."""
    from inference.pipeline import Frame, InferenceSettings, run_inference
    from model.autoencoder import FeatureAutoencoder
    from model.text import HashTextEncoder
    from preprocess.crop import CropInfo

    n_obj = len(SYNTH_NAMES)
    pred = SyntheticLatents(height, width, 2 * n_obj + 1, seed)
    rng = np.random.default_rng(seed)

    def frame(i):
        img = rng.integers(60, 200, size=(height, width, 3), dtype=np.uint8)
        return Frame(f"{i + 1:06d}", i, img, torch.from_numpy(img).permute(2, 0, 1).float() / 255,
                     CropInfo.identity((height, width)))

    out = root / "fields"
    run_inference((frame(i) for i in range(frames)), frames, pred, out,
                  InferenceSettings(chunk=8, pca=False, conf_percentile=0.0, point_stride=2))
    # the autoencoder: random, its decoder fitted (400 Adam steps, < 1 s) to send each label's latent (+ noise)
    # to the hash embedding of the label's name, as a trained one would; queries use the same text encoder
    labels = ["table", *SYNTH_NAMES, *(f"{n} base" for n in SYNTH_NAMES)]
    text = HashTextEncoder(dim=512, seed=seed)
    target = text.encode_text(labels)
    torch.manual_seed(seed)
    ae = FeatureAutoencoder()
    opt = torch.optim.Adam(ae.decoder.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(400):
        idx = torch.randint(0, len(labels), (128,), generator=g)
        d = ae.decode(pred.latents[idx] + 0.03 * torch.randn(128, 3, generator=g))
        loss = (1 - (d * target[idx]).sum(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ae.eval()

    @torch.no_grad()
    def decode(z):
        return ae.decode(z.to(torch.float32))

    gt = {name: {} for name in SYNTH_NAMES}
    for i in range(frames):
        lab = synthetic_labels(i, height, width)["large"]
        for j, name in enumerate(SYNTH_NAMES):
            gt[name][f"{i + 1:06d}"] = lab == j + 1
    return out, decode, text.encode_text, list(SYNTH_NAMES), gt


# ----------------------------------------------------------------------------------------------- demo output
def load_demo(demo: Path):
    """(fields dir, decode, encode_text, queries, gt) for a ``scripts/demo.sh`` output folder."""
    from eval.query.decode import autoencoder_decoder
    from inference.outputs import OutputLayout
    from model.text import HashTextEncoder
    from preprocess.annotations import load_coco_masks

    fields = demo / "inference"
    decode = autoencoder_decoder(demo / "autoencoder", device="cpu")
    coco = load_coco_masks(demo / "scene")
    keys = OutputLayout(fields).field_keys()
    key_of = {}
    for idx in coco.frame_indices:  # HyperNeRF numbering: frame index i is file/key number i + 1
        cand = [k for k in keys if k.lstrip("0").isdigit() and int(k) == idx + 1]
        if cand:
            key_of[idx] = cand[0]
    queries = list(coco.categories)
    gt = {q: {key_of[i]: coco.masks[i].get(q, np.zeros(coco.sizes[i], bool)) for i in key_of} for q in queries}
    return fields, decode, HashTextEncoder(seed=0).encode_text, queries, gt


# ----------------------------------------------------------------------------------------------- measuring
def run(fields, queries, out, encode_text, decode, exact, grid_size, batch):
    from eval.query import query_fields

    t0 = time.perf_counter()
    res = query_fields(fields, queries, out, encode_text, decode, exact=exact, grid_size=grid_size, batch=batch)
    return time.perf_counter() - t0, res


def read_masks(out: Path, query: str, keys) -> dict[str, np.ndarray]:
    from eval.query import slug
    from inference.visualize import load_png

    return {k: load_png(out / slug(query) / "mask" / f"{k}.png") > 127 for k in keys}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", default=None, help="a scripts/demo.sh output folder (default: outputs/demo if it has "
                                                 "inference/ and autoencoder/, else --synthetic)")
    p.add_argument("--synthetic", action="store_true", help="build a synthetic fields folder instead")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--width", type=int, default=200)
    p.add_argument("--height", type=int, default=150)
    p.add_argument("--grid-size", type=int, default=None, help="default: eval.query.relevancy.GRID_SIZE")
    p.add_argument("--batch", type=int, default=None, help="default: eval.query.BATCH_FRAMES")
    p.add_argument("--repeat", type=int, default=3, help="grid-path runs of the one-query timing (the median is used)")
    p.add_argument("--query", default=None, help="the one-query timing's text (default: the first query)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--min-agreement", type=float, default=0.9998,
                   help="fail (exit 1) when the grid's masks agree with the exact ones on a smaller share of pixels "
                        "(default 0.9998; the demo measures 0.99997)")
    p.add_argument("--json", default=None, help="also write the figures here")
    p.add_argument("--work", default=None, help="folder for the synthetic fields and the query outputs (kept; "
                                                 "default: a temporary folder)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging

    logging.basicConfig(level=logging.WARNING)
    from eval.query import BATCH_FRAMES
    from eval.query.relevancy import GRID_SIZE

    grid_size = args.grid_size or GRID_SIZE
    batch = args.batch or BATCH_FRAMES
    demo = Path(args.demo) if args.demo else REPO / "outputs" / "demo"
    use_demo = not args.synthetic and (demo / "inference" / "fields").is_dir() and (demo / "autoencoder").is_dir()
    if args.demo and not use_demo:
        raise SystemExit(f"{demo} has no inference/fields and autoencoder/ (run bash scripts/demo.sh --out {demo})")
    with tempfile.TemporaryDirectory(prefix="bench_query_") as tmp:
        tmp = Path(args.work) if args.work else Path(tmp)
        t0 = time.perf_counter()
        if use_demo:
            fields, decode, encode_text, queries, gt = load_demo(demo)
            source = f"demo output {demo}"
        else:
            fields, decode, encode_text, queries, gt = build_synthetic(tmp, args.frames, args.width, args.height)
            source = f"synthetic {args.frames} frames {args.width}x{args.height}, random autoencoder"
        from inference.outputs import OutputLayout

        keys = OutputLayout(fields).field_keys()
        print(f"[bench_query] {source}: {len(keys)} frames, queries {queries} "
              f"(setup {time.perf_counter() - t0:.1f} s, torch threads {torch.get_num_threads()})", flush=True)
        one = args.query or queries[0]
        # one query: exact once, grid --repeat times
        t_exact, _ = run(fields, [one], tmp / "exact1", encode_text, decode, True, grid_size, batch)
        print(f"[bench_query] one query {one!r}: exact {t_exact:.2f} s", flush=True)
        t_grid = []
        for r in range(args.repeat):
            t, _ = run(fields, [one], tmp / f"grid1_{r}", encode_text, decode, False, grid_size, batch)
            t_grid.append(t)
        t_med = statistics.median(t_grid)
        machine = (f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
                   f"{torch.backends.cpu.get_cpu_capability()} kernels, load {os.getloadavg()[0]:.1f}")
        print(f"[bench_query] one query {one!r}: grid {t_med:.2f} s median (runs {', '.join(f'{t:.2f}' for t in t_grid)})"
              f" -> {t_exact / t_med:.1f}x (best run {t_exact / min(t_grid):.1f}x; {machine})", flush=True)
        # all queries: agreement
        t_exact_all, res_e = run(fields, queries, tmp / "exact", encode_text, decode, True, grid_size, batch)
        t_grid_all, res_g = run(fields, queries, tmp / "grid", encode_text, decode, False, grid_size, batch)
        print(f"[bench_query] {len(queries)} queries: exact {t_exact_all:.2f} s, grid {t_grid_all:.2f} s "
              f"-> {t_exact_all / t_grid_all:.1f}x", flush=True)
        per_query = {}
        tot_eq = tot_px = 0
        for q in queries:
            me, mg = read_masks(tmp / "exact", q, keys), read_masks(tmp / "grid", q, keys)
            eq = sum(int((me[k] == mg[k]).sum()) for k in keys)
            px = sum(me[k].size for k in keys)
            inter = sum(int((me[k] & mg[k]).sum()) for k in keys)
            union = sum(int((me[k] | mg[k]).sum()) for k in keys)
            lev = sum(res_e[q]["frames"][k]["level"] != res_g[q]["frames"][k]["level"] for k in keys)
            gk = [k for k in gt.get(q, {}) if k in me]
            iou_e = float(np.mean([iou(me[k], gt[q][k]) for k in gk])) * 100 if gk else float("nan")
            iou_g = float(np.mean([iou(mg[k], gt[q][k]) for k in gk])) * 100 if gk else float("nan")
            per_query[q] = {"pixel_agreement": eq / px, "iou_grid_vs_exact": inter / union if union else 1.0,
                            "min_frame_agreement": min(float((me[k] == mg[k]).mean()) for k in keys),
                            "level_changes": int(lev), "gt_frames": len(gk), "iou_gt_exact": iou_e,
                            "iou_gt_grid": iou_g, "iou_gt_delta": iou_g - iou_e}
            tot_eq += eq
            tot_px += px
        print(f"{'query':<22} {'agree %':>8} {'IoU(g,e)':>9} {'worst fr %':>10} {'lvl chg':>7} "
              f"{'GT fr':>5} {'IoU ex':>7} {'IoU grid':>8} {'delta':>6}")
        for q, r in per_query.items():
            print(f"{q:<22} {100 * r['pixel_agreement']:8.3f} {100 * r['iou_grid_vs_exact']:9.2f} "
                  f"{100 * r['min_frame_agreement']:10.2f} {r['level_changes']:7d} {r['gt_frames']:5d} "
                  f"{r['iou_gt_exact']:7.2f} {r['iou_gt_grid']:8.2f} {r['iou_gt_delta']:+6.2f}")
        agree = tot_eq / tot_px
        worst_delta = max(abs(r["iou_gt_delta"]) for r in per_query.values())
        print(f"[bench_query] masks agree on {100 * agree:.3f} % of pixels; largest |IoU change| "
              f"{worst_delta:.2f} points; one-query speed-up {t_exact / t_med:.1f}x "
              f"(exact {t_exact:.2f} s, grid {t_med:.2f} s median of {len(t_grid)}, grid size {grid_size}, "
              f"batch {batch}) on {machine}")
        figures = {"source": source, "frames": len(keys), "queries": queries, "one_query": one,
                   "exact_s": t_exact, "grid_s": t_grid, "speedup": t_exact / t_med,
                   "all_exact_s": t_exact_all, "all_grid_s": t_grid_all, "pixel_agreement": agree,
                   "max_abs_iou_delta": worst_delta, "per_query": per_query, "grid_size": grid_size,
                   "batch": batch, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                   "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load": os.getloadavg()[0]}
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
        if agree < args.min_agreement:
            raise SystemExit(f"[bench_query] FAILED: masks agree on {100 * agree:.3f} % of pixels, below "
                             f"--min-agreement {100 * args.min_agreement:.3f} %")
        return figures


if __name__ == "__main__":
    main()
