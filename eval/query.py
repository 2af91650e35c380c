"""Text queries over inference outputs: ``python -m eval.query --fields <out> --text "red ball" --out <qout>``.

For every frame and query: decode the fields to CLIP space with the autoencoder, LERF relevancy against the
canonical negatives (:mod:`eval.relevancy`), the 4D LangSplat mask post-processing and level choice
(:mod:`eval.masks`, DESIGN §6), then pictures::

    <qout>/<query>/heatmap/<key>.png    chosen level's smoothed relevancy, min-max normalised (turbo colours)
    <qout>/<query>/mask/<key>.png       cleaned binary mask (0/255)
    <qout>/<query>/overlay/<key>.png    frame + heatmap + mask outline
    <qout>/<query>/overlay.mp4          the overlays as a video (--no-video to skip)
    <qout>/<query>/relevancy.ply        fused point cloud coloured by relevancy (when geometry exists)
    <qout>/<query>/summary.json         per frame: chosen level, max relevancy, mask area
    <qout>/summary.json                 all queries

``--source`` runs inference first (``python -m inference.run``) into ``--fields`` and then queries.
One frame's fields are in memory at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from inference.outputs import LEVELS, OutputLayout, read_depth, read_fields
from inference.visualize import Mp4Writer, heatmap_rgb, load_png, overlay, save_png
from utils.io import save_json_atomic, save_npy_atomic

log = logging.getLogger("eval.query")


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
                 threshold: float | None = None) -> dict:
    """Run text queries over saved fields and write heatmaps, masks, overlays (+ mp4, + relevancy PLY).

    Args:
        fields_dir: an inference output folder (with ``fields/``).
        texts: query strings.
        encode_text: ``list[str] -> (N, D)`` unit embeddings (ClipEncoder.encode_text, ...).
        decode: ``(P, k) -> (P, D)`` autoencoder decoder for k-dim fields (None when the fields are D-dim).
        level: "auto" (DESIGN §6: the level whose smoothed map has the highest max) or a level name.
        keys: frames to query (default: all with fields).
    Returns:
        {query: {"folder", "frames": {key: {"level", "score", "area"}}}} (also written as summary.json).
    """
    from eval.masks import MASK_THRESHOLD, masks_from_relevancy, normalize_relevancy
    from eval.relevancy import RelevancyModel

    layout = OutputLayout(fields_dir)
    out = Path(out)
    keys = list(keys) if keys is not None else layout.field_keys()
    if not keys:
        raise FileNotFoundError(f"no fields in {layout.root / 'fields'}; run `python -m inference.run` first")
    if level != "auto" and level not in levels:
        raise ValueError(f"--level {level!r} is not one of auto, {', '.join(levels)}")
    model = RelevancyModel(encode_text)
    texts = list(dict.fromkeys(texts))
    folders = {t: out / slug(t) for t in texts}
    if len(set(folders.values())) != len(folders):
        raise ValueError(f"queries {texts} map to the same folder names; make them differ in letters/digits")
    images = FrameImages(layout, source)
    writers = {t: Mp4Writer(folders[t] / "overlay.mp4", fps=fps) for t in texts} if video else {}
    have_geometry = ply and layout.cameras.exists()
    summary: dict = {t: {"folder": str(folders[t]), "frames": {}} for t in texts}
    try:
        for key in tqdm(keys, desc="query", unit="frame"):
            f, _ = read_fields(layout.fields(key), names=tuple(levels))
            feats = torch.stack([f[lvl] for lvl in levels]).permute(0, 2, 3, 1)  # (L, H, W, k)
            hw = tuple(feats.shape[1:3])
            rel = model.relevancy(feats, texts, decode=decode)  # (Q, L, H, W)
            bg = images(key, hw)
            for qi, text in enumerate(texts):
                lm = masks_from_relevancy(rel[qi], threshold=threshold if threshold is not None else MASK_THRESHOLD)
                li = lm.level if level == "auto" else list(levels).index(level)
                sm = lm.smoothed[li]
                heat = ((sm - sm.min()) / (sm.max() - sm.min() + 1e-9)).numpy()
                mask = lm.clean[li].numpy()
                folder = folders[text]
                save_png(folder / "heatmap" / f"{key}.png", heatmap_rgb(heat))
                save_png(folder / "mask" / f"{key}.png", mask.astype(np.uint8) * 255)
                ov = overlay(bg, normalize_relevancy(sm[None])[0].numpy(), mask)
                save_png(folder / "overlay" / f"{key}.png", ov)
                if video:
                    writers[text].write(ov)
                if have_geometry:
                    values = _point_values(layout, key, heat)
                    if values is not None:
                        save_npy_atomic(values, folder / ".ply_values" / f"{key}.npy")
                summary[text]["frames"][key] = {"level": list(levels)[li], "score": float(lm.scores[li]),
                                                "area": int(mask.sum())}
            del f, feats, rel
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    if have_geometry:
        for text in texts:
            n = _write_relevancy_ply(layout, folders[text] / ".ply_values", folders[text] / "relevancy.ply", keys)
            summary[text]["ply_points"] = n
    for text in texts:
        save_json_atomic({"query": text, **summary[text]}, folders[text] / "summary.json")
    save_json_atomic({"queries": texts, "fields": str(layout.root), "results": summary}, out / "summary.json")
    return summary


def _point_values(layout: OutputLayout, key: str, heat: np.ndarray) -> np.ndarray | None:
    """Relevancy (N,) at the pixel of each point of frame ``key``'s PLY (points re-projected with its camera)."""
    from inference.geometry import project_points
    from inference.ply import read_ply

    if not (layout.points(key).exists() and layout.depth(key).exists()):
        return None
    ply = read_ply(layout.points(key))
    d, _ = read_depth(layout.depth(key), names=("extrinsics", "intrinsics"))
    uv, _ = project_points(ply["xyz"], d["intrinsics"].numpy(), d["extrinsics"].numpy())
    H, W = heat.shape
    ok = np.isfinite(uv).all(axis=1)
    uv = np.where(ok[:, None], uv, 0.0)
    col = np.clip(np.floor(uv[:, 0]).astype(int), 0, W - 1)
    row = np.clip(np.floor(uv[:, 1]).astype(int), 0, H - 1)
    return np.where(ok, heat[row, col], 0.0).astype(np.float32)


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
    p.add_argument("--level", default="auto", help="auto (highest smoothed relevancy, DESIGN §6) or small|middle|large")
    p.add_argument("--threshold", type=float, default=None, help="mask threshold on the [0,1] relevancy (default 0.4)")
    p.add_argument("--no-video", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--no-ply", action="store_true", help="do not write the relevancy-coloured point cloud")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of overlay.mp4")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--source", default=None,
                   help="frames/video: run `python -m inference.run` into --fields first (pass its options after "
                        "'--', e.g. -- --decoder runs/x --backbone tiny)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings")
    from eval.text import add_text_encoder_args

    add_text_encoder_args(p)
    return p


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from utils.device import resolve_device

    device = resolve_device(args.device)
    if args.source:
        from inference.run import main as infer_main

        infer_main(["--source", args.source, "--out", args.fields, *extra])
    layout = OutputLayout(args.fields)
    ae = args.autoencoder
    if ae is None and layout.meta.exists():
        ae = layout.autoencoder()  # the copy inside the fields folder (or an absolute path of older outputs)
    decode = None
    if ae and ae != "none":
        from eval.fields import autoencoder_decoder

        decode = autoencoder_decoder(ae, device=device)
    from eval.text import text_encoder_from_args

    encode = text_encoder_from_args(args, device=str(device))
    return query_fields(args.fields, args.text, args.out or layout.root / "queries", encode, decode,
                        level=args.level, video=not args.no_video, fps=args.fps, ply=not args.no_ply,
                        threshold=args.threshold)


if __name__ == "__main__":
    res = main()
    print(json.dumps({q: {"folder": r["folder"], "frames": len(r["frames"])} for q, r in res.items()}, indent=2))
