"""``python -m eval.tracks.scene``: the motion table of a scene with ground truth (the synthetic world's ``gt/``):
the weight-free tracker, zero motion and the ground truth on TAP-Vid (both query modes), DIS flow EPE, and the
moving-mask IoU, in one command (what the demo prints under the language table).

    python -m eval.tracks.scene data/synthetic/demo --out outputs/demo/motion

Reads ``<scene>/gt/tracks.npz`` (TAP-Vid keys), the scene's frames (``rgb/2x`` or ``images``), and when present
``<scene>/gt/geometry`` (3D lifting, APD with ``tracks_camera``), the ground-truth flow (``--gt-flow``, default
``<scene>/gt/flow.npz``: flow (T-1,H,W,2) [+ occluded]) and moving masks (``--gt-masks``, default
``<scene>/gt/moving.npz``: masks (T,H,W) or (T-1,H,W) from t to t+1). The synthetic world's ``gt/motion/`` files are
read when neither is given (converted to ``gt_flow.npz`` and ``gt_moving.npz`` in --out). Writes into --out: ``tracks.npz`` (the tracker's prediction),
``moving.npz``, ``flow.npz``, ``timeline.json`` (python -m inference.motion), ``metrics_first.json``,
``metrics_strided.json`` (python -m eval.tracks), ``table.md``; prints the table. With ``--trackhead BACKBONE``
also ``tracks_head.npz`` and ``metrics_head_{first,strided}.json``: the track head as one more row.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utils.cli import UserError, add_device_arg, add_logging_args, cli_main, setup_logging_from
from utils.io import atomic_path, save_npz_atomic


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


HEAD_ROW = "track head (StreamVGGT)"


def table(first: dict, strided: dict, head: tuple[dict, dict] | None = None) -> str:
    """The motion table (markdown) from the JSON of ``eval.tracks`` in both query modes (and, with ``head``, the
    same pair for the track head's prediction, as one more row)."""
    lines = ["| method | AJ (first) | δ_avg (first) | OA (first) | AJ (strided) | δ_avg (strided) |",
             "|---|---|---|---|---|---|"]
    names = {"prediction": "tracker (weight-free, LK)", "zero_motion": "zero motion", "ground_truth": "ground truth"}
    rows = [(name, first["tracks"][key], strided["tracks"][key]) for key, name in names.items()]
    if head is not None:
        rows.insert(1, (HEAD_ROW, head[0]["tracks"]["prediction"], head[1]["tracks"]["prediction"]))
    for name, a, b in rows:
        lines.append(f"| {name} | {_pct(a['average_jaccard'])} | {_pct(a['average_pts_within_thresh'])} | "
                     f"{_pct(a['occlusion_accuracy'])} | {_pct(b['average_jaccard'])} | "
                     f"{_pct(b['average_pts_within_thresh'])} |")
    if "tracks_3d" in first:
        r = first["tracks_3d"]
        lines += ["", "| 3D (TAPVid-3D, median scale) | APD | 3D-AJ |", "|---|---|---|"]
        rows3 = [(name, r[key]) for key, name in names.items()]
        if head is not None and "tracks_3d" in head[0]:
            rows3.insert(1, (HEAD_ROW, head[0]["tracks_3d"]["prediction"]))
        for name, m in rows3:
            lines.append(f"| {name} | {_pct(m['apd_3d'])} | {_pct(m['average_jaccard'])} |")
    if "flow" in first:
        f = first["flow"]
        lines += ["", "| flow | EPE all (px) | EPE non-occluded (px) |", "|---|---|---|"]
        for key, name in (("prediction", "DIS (OpenCV)"), ("zero_motion", "zero flow"), ("ground_truth", "ground truth")):
            lines.append(f"| {name} | {f[key]['epe_all']:.3f} | {f[key]['epe_noc']:.3f} |")
    if "moving_masks" in first:
        m = first["moving_masks"]
        lines += ["", "| moving masks | IoU |", "|---|---|"]
        for key, name in (("prediction", "flow vs camera motion"), ("all_static", "all static"),
                          ("all_moving", "all moving"), ("ground_truth", "ground truth")):
            lines.append(f"| {name} | {_pct(m[key]['mask_iou'])} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.tracks.scene", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scene", help="scene folder with gt/tracks.npz and its frames")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--gt-flow", default=None, help="ground-truth flow npz (default <scene>/gt/flow.npz if present)")
    p.add_argument("--gt-masks", default=None,
                   help="ground-truth moving masks npz (default <scene>/gt/moving.npz if present)")
    p.add_argument("--no-geometry", action="store_true", help="do not use <scene>/gt/geometry (2D only)")
    p.add_argument("--trackhead", default=None, metavar="BACKBONE",
                   help="also score the StreamVGGT track head with these weights (streamvggt, a path, tiny[:seed]) on "
                        "--tokens (default <scene>/tokens; computed when absent), as one more row")
    p.add_argument("--tokens", default=None, help="token cache of the scene for --trackhead")
    add_device_arg(p, "cpu", " of --trackhead")
    add_logging_args(p)
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from eval.tracks.run import main as score
    from inference.motion import main as motion
    from inference.track import main as track

    args = build_parser().parse_args(argv)
    setup_logging_from(args)
    scene, out = Path(args.scene), Path(args.out)
    gt = scene / "gt" / "tracks.npz"
    if not gt.is_file():
        raise UserError("no ground-truth tracks", gt, "give a scene with gt/tracks.npz (the synthetic world writes it)")
    quiet = ["-q"] if args.quiet else []
    geometry = scene / "gt" / "geometry"
    geo = ["--geometry", str(geometry)] if geometry.is_dir() and not args.no_geometry else []
    track([str(scene), "--queries", str(gt), "--out", str(out / "tracks.npz"), *geo, *quiet])
    motion([str(scene), "--out", str(out), "--save-flow", *geo, *quiet])
    extra: list[str] = []
    if geo:
        from inference.outputs import read_depth
        from inference.tracking.lift import geometry_files

        k = read_depth(geometry_files(geometry)[0], names=("intrinsics",))[0]["intrinsics"].numpy()
        extra += ["--focal", repr(float(k[0, 0])), repr(float(k[1, 1]))]  # for APD, when gt has no intrinsics
    world_motion = scene / "gt" / "motion"
    if not (args.gt_flow or args.gt_masks) and world_motion.is_dir():  # the synthetic world's per-frame files
        from eval.tracks.motion import read_world_motion

        motion_gt = read_world_motion(world_motion)
        save_npz_atomic({"flow": motion_gt["flow"], "occluded": motion_gt["occluded"]}, out / "gt_flow.npz")
        save_npz_atomic({"masks": motion_gt["masks"]}, out / "gt_moving.npz")
        args.gt_flow, args.gt_masks = str(out / "gt_flow.npz"), str(out / "gt_moving.npz")
    gt_flow = Path(args.gt_flow) if args.gt_flow else scene / "gt" / "flow.npz"
    if args.gt_flow or gt_flow.is_file():
        extra += ["--gt-flow", str(gt_flow), "--pred-flow", str(out / "flow.npz")]
    gt_masks = Path(args.gt_masks) if args.gt_masks else scene / "gt" / "moving.npz"
    if args.gt_masks or gt_masks.is_file():
        extra += ["--gt-masks", str(gt_masks), "--pred-masks", str(out / "moving.npz")]
    results = {}
    for mode in ("first", "strided"):
        results[mode] = score(["--gt", str(gt), "--pred", str(out / "tracks.npz"), "--query-mode", mode,
                               "--json", str(out / f"metrics_{mode}.json"), "-q", *(extra if mode == "first" else extra[:3 * bool(geo)])])
    head = None
    if args.trackhead:
        tokens = args.tokens or (str(scene / "tokens") if (scene / "tokens").is_dir() else None)
        track([str(scene), "--queries", str(gt), "--out", str(out / "tracks_head.npz"), "--method", "trackhead",
               "--backbone", args.trackhead, "--device", args.device, *(["--tokens", tokens] if tokens else []),
               *geo, *quiet])
        for mode in ("first", "strided"):
            results[f"head_{mode}"] = score(["--gt", str(gt), "--pred", str(out / "tracks_head.npz"), "--query-mode",
                                             mode, "--json", str(out / f"metrics_head_{mode}.json"), "-q",
                                             *extra[:3 * bool(geo)]])
        head = tuple(json.loads((out / f"metrics_head_{m}.json").read_text()) for m in ("first", "strided"))
    md = table(json.loads((out / "metrics_first.json").read_text()),
               json.loads((out / "metrics_strided.json").read_text()), head)
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(md + "\n")
    print(md)
    return results


if __name__ == "__main__":
    main()
