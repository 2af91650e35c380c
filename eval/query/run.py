"""Text queries over inference outputs: ``python -m eval.query --fields <out> --text "red ball" --out <qout>``.

For every frame and query: LERF relevancy of the fields against the canonical negatives (:mod:`eval.query.relevancy`),
the 4D LangSplat mask post-processing and level choice (:mod:`eval.query.masks`, docs/architecture.md §6), then pictures::

    <qout>/<query>/heatmap/<key>.png    chosen level's smoothed relevancy, min-max normalised (turbo colours)
    <qout>/<query>/mask/<key>.png       cleaned binary mask (0/255)
    <qout>/<query>/overlay/<key>.png    frame + heatmap + mask outline
    <qout>/<query>/overlay.mp4          the overlays as a video (--no-video to skip)
    <qout>/<query>/relevancy.ply        fused point cloud coloured by relevancy (when geometry exists)
    <qout>/<query>/summary.json         per frame: chosen level, max relevancy, mask area
    <qout>/summary.json                 all queries

Relevancy (default, autoencoded fields with k <= 3 dims): the relevancy of a pixel depends only on its latent,
so the autoencoder decoder runs once on the points of a 48^3 grid over the fields' latent box that some pixel
needs (:class:`eval.query.relevancy.LatentGrid`), every query is one matrix product with those features, and each
pixel's logit is interpolated trilinearly from its grid cell. The frames go through the mask steps in batches
(:func:`eval.query.batch_masks.frame_masks` with ``exact_ties=False``: the level is chosen and smoothed with the
separable pool, the published 29x29 pool only for near-flat maps). One query over the 64-frame 200x150 demo
output: 1.0-1.1 s instead of 26 s on a 2-core CPU (Dec 7), masks equal to the exact path's on 99.997 % of the
pixels (benchmarks/bench_query.py, eval/README.md).
``--exact``: the reference path, every pixel of every level decoded and every level post-processed with
:func:`eval.query.masks.masks_from_relevancy`, one frame at a time (also taken for CLIP-dimensional fields and
latents of more than 3 dims).

``--source`` runs inference first (``python -m inference.run``) into ``--fields`` and then queries.
Memory: the grid path keeps up to FIELD_CACHE_BYTES of fields between its two passes (latent range, queries)
and a batch of frames' relevancy (RELEVANCY_BATCH values); the exact path one frame at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from eval.query.batch_masks import FrameMasks, frame_masks
from eval.query.relevancy import (
    GRID_SIZE,
    MAX_GRID_DIM,
    LatentGrid,
    LogitVolume,
    RelevancyModel,
    latent_range,
)
from inference.outputs import LEVELS, OutputLayout, read_depth, read_fields
from inference.visualize import Mp4Writer, annotate, heatmap_rgb, load_png, overlay
from utils.cli import UserError, add_device_arg, add_logging_args, cli_main, setup_logging_from
from utils.io import save_json_atomic, save_npy_atomic

log = logging.getLogger("eval.query")

BATCH_FRAMES = 16  # frames whose relevancy and masks are computed together
FIELD_CACHE_BYTES = 1 << 30  # fields kept in memory between the grid path's two passes
RELEVANCY_BATCH = 1 << 25  # relevancy values (queries x frames x levels x pixels) computed at once


def slug(text: str) -> str:
    """Folder name of a query: lowercase, non-alphanumerics -> '_' ("Red Ball!" -> "red_ball")."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s or "query"


class FrameImages:
    """Background pictures for overlays: the original frames when ``meta.json`` names a readable source,
    else the RGB reconstruction, else grey."""

    def __init__(self, layout: OutputLayout, source: str | None = None):
        self.layout = layout
        self.refs = {}
        src = source
        if src is None and layout.meta.exists():
            src = json.loads(layout.meta.read_text()).get("source")
        if src:
            try:
                from preprocess.frames import list_frames

                self.refs = {r.key: r for r in list_frames(src)}
            except (FileNotFoundError, ValueError, ImportError) as e:
                log.warning("cannot read the original frames from %s (%s); overlays use the reconstruction", src, e)

    def __call__(self, key: str, hw: tuple[int, int]) -> np.ndarray:
        if key in self.refs:
            from preprocess.frames import read_frame

            rgb = read_frame(self.refs[key])
            if rgb.shape[:2] == tuple(hw):
                return rgb
        if self.layout.rgb(key).exists():
            return load_png(self.layout.rgb(key))
        return np.full((*hw, 3), 128, np.uint8)


def query_fields(fields_dir: str | Path, texts: Sequence[str], out: str | Path,
                 encode_text: Callable[[list[str]], torch.Tensor],
                 decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 levels: Sequence[str] = LEVELS, level: str = "auto", video: bool = True, fps: float = 10.0,
                 ply: bool = True, keys: Sequence[str] | None = None, source: str | None = None,
                 threshold: float | None = None, exact: bool = False, grid_size: int = GRID_SIZE,
                 batch: int = BATCH_FRAMES, grid: LatentGrid | None = None) -> dict:
    """Run text queries over saved fields and write heatmaps, masks, overlays (+ mp4, + relevancy PLY).

    Args:
        fields_dir: an inference output folder (with ``fields/``).
        texts: query strings.
        encode_text: ``list[str] -> (N, D)`` unit embeddings (ClipEncoder.encode_text, ...).
        decode: ``(P, k) -> (P, D)`` autoencoder decoder for k-dim fields (None when the fields are D-dim).
        level: "auto" (docs/architecture.md §6: the level whose smoothed map has the highest max) or a level name.
        keys: frames to query (default: all with fields).
        exact: decode every pixel (the reference path) instead of interpolating the relevancy from a latent
            grid (:class:`eval.query.relevancy.LatentGrid`, the default for k <= 3 autoencoded fields).
        grid_size: grid points per latent axis; batch: frames post-processed together.
        grid: a :class:`LatentGrid` of this ``decode`` to reuse (e.g. across calls); used when its box holds
            the latents of ``keys``, else a new one is built.
    Returns:
        {query: {"folder", "frames": {key: {"level", "score", "area"}}}} (also written as summary.json).
    """
    from eval.query.masks import MASK_THRESHOLD

    layout = OutputLayout(fields_dir)
    out = Path(out)
    keys = list(keys) if keys is not None else layout.field_keys()
    if not keys:
        raise FileNotFoundError(f"no fields in {layout.root / 'fields'}; run `python -m inference.run` first")
    if level != "auto" and level not in levels:
        raise ValueError(f"--level {level!r} is not one of auto, {', '.join(levels)}")
    levels = tuple(levels)
    fixed_level = None if level == "auto" else levels.index(level)
    thr = threshold if threshold is not None else MASK_THRESHOLD
    model = RelevancyModel(encode_text)
    texts = list(dict.fromkeys(texts))
    folders = {t: out / slug(t) for t in texts}
    if len(set(folders.values())) != len(folders):
        raise ValueError(f"queries {texts} map to the same folder names; make them differ in letters/digits")
    req = _Request(layout, keys, texts, folders, out, model, decode, levels, fixed_level, thr, video, fps, ply,
                   source, exact, grid_size, batch, grid)
    torch_grad = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    try:
        return _query(req)
    finally:
        torch.set_grad_enabled(torch_grad)


@dataclass(frozen=True)
class _Request:
    """What one :func:`query_fields` call asks for, after its argument checks (see its arguments)."""

    layout: OutputLayout
    keys: list[str]
    texts: list[str]
    folders: dict[str, Path]  # query -> its output folder
    out: Path
    model: RelevancyModel
    decode: Callable[[torch.Tensor], torch.Tensor] | None
    levels: tuple[str, ...]
    fixed_level: int | None  # None: each frame's level chosen ("auto")
    threshold: float
    video: bool
    fps: float
    ply: bool
    source: str | None
    exact: bool
    grid_size: int
    batch: int
    grid: LatentGrid | None


def _query(req: _Request) -> dict:
    """:func:`query_fields` after its argument checks (with autograd off): relevancy and masks batch by batch,
    pictures written as they come, then the point clouds and summaries."""
    volume = None
    read = _Fields(req.layout, req.levels, budget=0 if req.exact else FIELD_CACHE_BYTES)
    if not req.exact:
        _, volume = _grid_for(read, req.keys, req.decode, req.model, req.texts, req.grid_size, req.grid)
    images = FrameImages(req.layout, req.source)
    writers = {t: Mp4Writer(req.folders[t] / "overlay.mp4", fps=req.fps) for t in req.texts} if req.video else {}
    have_geometry = req.ply and req.layout.cameras.exists()
    summary: dict = {t: {"folder": str(req.folders[t]), "frames": {}} for t in req.texts}
    bar = tqdm(total=len(req.keys), desc="query", unit="frame")
    pngs = _PngWriter()
    try:
        # the reference path (exact, or fields the grid does not apply to) goes frame by frame as before
        batch = req.batch if volume is not None else 1
        for batch_keys, feats in _field_batches(read, req.keys, batch, len(req.texts)):
            rel = _relevancy(req, volume, feats)
            hw = tuple(feats.shape[2:4])
            bgs = [images(key, hw) for key in batch_keys]
            pixels = [_point_pixels(req.layout, key, hw) if have_geometry else None for key in batch_keys]
            for qi, text in enumerate(req.texts):
                fm = (frame_masks(rel[qi], threshold=req.threshold, level=req.fixed_level, exact_ties=False)
                      if volume is not None else _reference_masks(rel[qi], req.threshold, req.fixed_level))
                summary[text]["frames"].update(
                    _write_frames(req, text, batch_keys, fm, bgs, pixels, pngs, writers.get(text)))
            pngs.wait(keep=len(batch_keys) * len(req.texts) * 3)  # at most one batch of pictures in flight
            bar.update(len(batch_keys))
            del feats, rel
        pngs.wait()
        bar.close()
        for w in writers.values():
            w.close()
    except BaseException:
        pngs.wait(raise_errors=False)
        bar.close()
        for w in writers.values():
            w.abort()
        raise
    _write_summaries(req, summary, have_geometry)
    return summary


def _relevancy(req: _Request, volume: LogitVolume | None, feats: torch.Tensor) -> torch.Tensor:
    """Fields ``(B, L, H, W, k)`` of a batch -> relevancy ``(Q, B, L, H, W)`` of every query: interpolated from
    the latent grid's logit ``volume``, or (None) decoded pixel by pixel (the reference path)."""
    if volume is not None:
        return volume.relevancy(feats, req.model.temperature)
    return torch.stack([req.model.relevancy(f, req.texts, decode=req.decode) for f in feats], dim=1)


def _write_frames(req: _Request, text: str, keys: Sequence[str], fm: FrameMasks, bgs: list[np.ndarray],
                  pixels: list[tuple[np.ndarray, ...] | None], pngs: _PngWriter, writer: Mp4Writer | None
                  ) -> dict[str, dict]:
    """One query's pictures of a batch of frames (heatmap, mask, overlay, the overlay video's frames, the values
    of the relevancy point cloud); -> the summary of each frame (its level, score and mask area)."""
    sm = fm.smoothed
    lo = sm.amin(dim=(-2, -1), keepdim=True)
    hi = sm.amax(dim=(-2, -1), keepdim=True)
    heats = ((sm - lo) / (hi - lo + 1e-9)).numpy()
    normed = fm.normalized.numpy()
    masks = fm.clean.numpy()
    folder = req.folders[text]
    frames = {}
    for bi, key in enumerate(keys):
        heat, mask = heats[bi], masks[bi]
        title = f"{text} | {req.levels[int(fm.level[bi])]} level"
        pngs.save(folder / "heatmap" / f"{key}.png", annotate(heatmap_rgb(heat), f"{title} | relevancy"))
        pngs.save(folder / "mask" / f"{key}.png", mask.astype(np.uint8) * 255)
        ov = annotate(overlay(bgs[bi], normed[bi], mask), title, legend="red outline: mask")
        pngs.save(folder / "overlay" / f"{key}.png", ov)
        if writer is not None:
            writer.write(ov)
        if pixels[bi] is not None:
            row, col, ok = pixels[bi]
            values = np.where(ok, heat[row, col], 0.0).astype(np.float32)
            save_npy_atomic(values, folder / ".ply_values" / f"{key}.npy")
        li = int(fm.level[bi])
        frames[key] = {"level": req.levels[li], "score": float(fm.scores[bi]), "area": int(mask.sum())}
    return frames


def _write_summaries(req: _Request, summary: dict, have_geometry: bool) -> None:
    """The relevancy point clouds (with geometry), each query's ``summary.json`` and ``<out>/summary.json``."""
    if have_geometry:
        for text in req.texts:
            folder = req.folders[text]
            summary[text]["ply_points"] = _write_relevancy_ply(req.layout, folder / ".ply_values",
                                                               folder / "relevancy.ply", req.keys)
    for text in req.texts:
        save_json_atomic({"query": text, **summary[text]}, req.folders[text] / "summary.json")
    save_json_atomic({"queries": req.texts, "fields": str(req.layout.root), "results": summary},
                     req.out / "summary.json")


def _reference_masks(rel: torch.Tensor, threshold: float, level: int | None):
    """:func:`eval.query.batch_masks.frame_masks`'s result computed as the reference path always did: every level of
    every frame through :func:`eval.query.masks.masks_from_relevancy`, then the chosen level picked."""
    from eval.query.masks import masks_from_relevancy, normalize_relevancy

    per = [masks_from_relevancy(r, threshold=threshold) for r in rel]
    pick = [(lm, lm.level if level is None else level) for lm in per]
    smoothed = torch.stack([lm.smoothed[i] for lm, i in pick])
    return FrameMasks(level=torch.tensor([i for _, i in pick]), smoothed=smoothed,
                      normalized=normalize_relevancy(smoothed),
                      raw=torch.stack([lm.raw[i] for lm, i in pick]), clean=torch.stack([lm.clean[i] for lm, i in pick]),
                      scores=torch.stack([lm.scores[i] for lm, i in pick]))


class _Fields:
    """Each frame's fields as a (L, H, W, k) float32 tensor; the first ``budget`` bytes read stay in memory (the
    grid path reads every frame twice: once for the latent range, once to query)."""

    def __init__(self, layout: OutputLayout, levels: tuple[str, ...], budget: int = 0):
        self.layout, self.levels, self.budget = layout, levels, budget
        self.cache: dict[str, torch.Tensor] = {}
        self.used = 0

    def __call__(self, key: str) -> torch.Tensor:
        if key in self.cache:
            return self.cache[key]
        f, _ = read_fields(self.layout.fields(key), names=self.levels)
        missing = [lvl for lvl in self.levels if lvl not in f]
        if missing:
            raise KeyError(f"{self.layout.fields(key)} has no {', '.join(missing)} field")
        x = torch.stack([f[lvl] for lvl in self.levels]).float().permute(0, 2, 3, 1).contiguous()  # (L, H, W, k)
        if self.used + x.nbytes <= self.budget:
            self.cache[key] = x
            self.used += x.nbytes
        return x


def _field_batches(read: _Fields, keys: Sequence[str], batch: int, queries: int = 1):
    """Yield (keys, (B, L, H, W, k) float32 fields) for runs of consecutive same-size frames: at most ``batch``,
    and at most as many as keep the batch's relevancy (``queries`` x B x L x H x W) within RELEVANCY_BATCH."""
    pending: list[tuple[str, torch.Tensor]] = []
    for key in keys:
        x = read(key)
        limit = max(1, min(batch, RELEVANCY_BATCH // max(1, queries * x[..., 0].numel())))
        if pending and (len(pending) >= limit or pending[0][1].shape != x.shape):
            yield [k for k, _ in pending], torch.stack([v for _, v in pending])
            pending = []
        pending.append((key, x))
    if pending:
        yield [k for k, _ in pending], torch.stack([v for _, v in pending])


def _grid_for(read: _Fields, keys: Sequence[str], decode, model: RelevancyModel, texts: list[str], size: int,
              grid: LatentGrid | None) -> tuple[LatentGrid | None, LogitVolume | None]:
    """The latent grid covering the fields of ``keys`` and the queries' logits on it, or (None, None) when the
    fields are not autoencoded latents of <= MAX_GRID_DIM dims (then the exact path runs)."""
    if decode is None:
        return None, None
    lo = hi = None
    for key in keys:  # first pass: the latent box
        x = read(key)
        if x.shape[-1] > MAX_GRID_DIM:
            log.info("fields have %d dims (> %d): exact per-pixel relevancy", x.shape[-1], MAX_GRID_DIM)
            return None, None
        a, b = latent_range(x)
        lo = a if lo is None else torch.minimum(lo, a)
        hi = b if hi is None else torch.maximum(hi, b)
    if lo is None or not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        log.warning("no or non-finite field values: exact per-pixel relevancy")
        return None, None
    if grid is None or grid.size != size or not grid.contains(lo, hi):
        grid = LatentGrid(decode, lo, hi, size)
    log.info("latent grid: %d^%d points over [%s] .. [%s]", size, grid.k,
             ", ".join(f"{v:.3g}" for v in grid.lo.tolist()), ", ".join(f"{v:.3g}" for v in grid.hi.tolist()))
    return grid, grid.volume(model.embed(texts), model.negatives)


class _PngWriter:
    """PNG files written on a background thread (PIL compresses without the GIL), so that the pictures of one
    batch are encoded while the next batch's relevancy and masks are computed. Fast zlib settings (level 1, RLE):
    same pixels as ``inference.visualize.save_png``, ~4x faster to write, about as small."""

    def __init__(self):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval.query.png")
        self.pending: list = []

    @staticmethod
    def _write(path: Path, image: np.ndarray) -> None:
        from PIL import Image

        from utils.io import atomic_path

        with atomic_path(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG", compress_level=1, compress_type=3)

    def save(self, path: Path, image: np.ndarray) -> None:
        self.pending.append(self.pool.submit(self._write, path, np.ascontiguousarray(image)))

    def wait(self, keep: int = 0, raise_errors: bool = True) -> None:
        """Wait until at most ``keep`` writes are pending (re-raising the first error); ``keep=0`` also ends
        the thread."""
        while len(self.pending) > keep:
            f = self.pending.pop(0)
            try:
                f.result()
            except BaseException:
                if raise_errors:
                    self.wait(raise_errors=False)
                    raise
        if keep == 0:
            self.pool.shutdown(wait=True)


def _point_pixels(layout: OutputLayout, key: str, hw: tuple[int, int]) -> tuple[np.ndarray, ...] | None:
    """(row, col, ok) pixel of each point of frame ``key``'s PLY (re-projected with its camera), or None."""
    from inference.geometry import project_points
    from inference.ply import read_ply

    if not (layout.points(key).exists() and layout.depth(key).exists()):
        return None
    ply = read_ply(layout.points(key))
    d, _ = read_depth(layout.depth(key), names=("extrinsics", "intrinsics"))
    uv, _ = project_points(ply["xyz"], d["intrinsics"].numpy(), d["extrinsics"].numpy())
    H, W = hw
    ok = np.isfinite(uv).all(axis=1)
    uv = np.where(ok[:, None], uv, 0.0)
    col = np.clip(np.floor(uv[:, 0]).astype(int), 0, W - 1)
    row = np.clip(np.floor(uv[:, 1]).astype(int), 0, H - 1)
    return row, col, ok


def _write_relevancy_ply(layout: OutputLayout, scratch: Path, out_path: Path, keys: Sequence[str]) -> int:
    """Fused point cloud coloured by the per-point relevancy values saved in ``scratch`` (then removed)."""
    import shutil

    from inference.pipeline import write_fused
    from utils.io import load_npy

    def colours(key: str, ply: dict) -> np.ndarray:
        p = scratch / f"{key}.npy"
        values = load_npy(p) if p.exists() else np.zeros(len(ply["xyz"]), np.float32)
        return heatmap_rgb(values[None, :])[0]

    n = write_fused(layout, list(keys), max_points=2_000_000, colors=colours, path=out_path)
    shutil.rmtree(scratch, ignore_errors=True)
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.query", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fields", required=True, help="inference output folder (the --out of inference.run)")
    p.add_argument("--text", action="append", required=True, help="a query; repeat for several")
    p.add_argument("--out", default=None, help="query output folder; default <fields>/queries")
    p.add_argument("--autoencoder", default=None,
                   help="autoencoder folder to decode the fields to CLIP space; default: the one recorded in the "
                        "fields' meta.json; 'none' when the fields are already CLIP-dimensional")
    p.add_argument("--level", default="auto", help="auto (highest smoothed relevancy, docs/architecture.md §6) or small|middle|large")
    p.add_argument("--threshold", type=float, default=None, help="mask threshold on the [0,1] relevancy (default 0.4)")
    p.add_argument("--exact", action="store_true",
                   help="decode every pixel of every level through the autoencoder (the reference path, ~20-60x "
                        "slower on a CPU); default: decode a latent grid once and interpolate the relevancy")
    p.add_argument("--grid-size", type=int, default=GRID_SIZE,
                   help="grid points per latent axis of the default path (over the fields' min..max per axis)")
    p.add_argument("--batch", type=int, default=BATCH_FRAMES, help="frames processed together")
    p.add_argument("--no-video", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--no-ply", action="store_true", help="do not write the relevancy-coloured point cloud")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of overlay.mp4")
    add_device_arg(p)
    g = p.add_argument_group("tracking (eval/query/track.py)")
    g.add_argument("--track", action="store_true",
                   help="follow each query through the video: points sampled in its mask on its most confident "
                        "frame, tracked forwards and backwards (OpenCV LK), lifted to 3D with the output's geometry; "
                        "writes <out>/tracks/<query>.npz, <query>/trails/*.png and <query>/timeline.json (frames "
                        "where the object moves) and prints the timeline")
    g.add_argument("--track-points", type=int, default=64, help="points sampled inside the mask (default 64)")
    g.add_argument("--track-frame", default=None,
                   help="frame key or index to sample the points on (default: the query's most confident frame)")
    g.add_argument("--trail", type=int, default=10, help="frames of trail drawn behind each point (default 10)")
    p.add_argument("--source", default=None,
                   help="frames/video: run `python -m inference.run` into --fields first (pass its options after "
                        "'--', e.g. -- --decoder runs/x --backbone tiny)")
    from eval.query.text import add_text_encoder_args

    add_text_encoder_args(p)
    add_logging_args(p)
    return p


@cli_main
def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = build_parser().parse_args(argv)
    setup_logging_from(args)
    from utils.device import resolve_device

    device = resolve_device(args.device)
    if args.source:
        from inference.run import main as infer_main

        infer_main(["--source", args.source, "--out", args.fields, *extra])
    layout = OutputLayout(args.fields)
    if not layout.field_keys():
        raise UserError("no fields here (expected fields/<key>.safetensors)", layout.root,
                        "pass the --out folder of python -m inference.run (or --source to run it first)")
    ae = args.autoencoder
    if ae is None and layout.meta.exists():
        ae = layout.autoencoder()  # the copy inside the fields folder (or an absolute path of older outputs)
    decode = None
    if ae and ae != "none":
        from eval.query.decode import autoencoder_decoder

        decode = autoencoder_decoder(ae, device=device)
    from eval.query.text import text_encoder_from_args

    encode = text_encoder_from_args(args, device=str(device), decoders=[decode])
    qout = Path(args.out) if args.out else layout.root / "queries"
    result = query_fields(args.fields, args.text, qout, encode, decode,
                          level=args.level, video=not args.no_video, fps=args.fps, ply=not args.no_ply,
                          threshold=args.threshold, exact=args.exact, grid_size=args.grid_size,
                          batch=args.batch)
    if args.track:
        from eval.query.track import format_timeline, track_query

        keys = layout.field_keys()
        images = FrameImages(layout)
        cache: dict = {}
        for text in dict.fromkeys(args.text):
            timeline = track_query(layout, qout / slug(text), qout / "tracks" / f"{slug(text)}.npz", text, keys,
                                   result[text]["frames"], images, args.track_points, args.track_frame, args.trail,
                                   cache)
            result[text]["timeline"] = timeline
            print(format_timeline(timeline))
    return result


def cli() -> None:
    """``python -m eval.query``: run, then print where each query's pictures went."""
    res = main()
    print(json.dumps({q: {"folder": r["folder"], "frames": len(r["frames"])} for q, r in res.items()}, indent=2))


if __name__ == "__main__":
    cli()
