"""Score an inference output's geometry (video depth, camera poses) against ground truth, as the field does.

    python -m eval.geometry --pred outputs/demo --gt data/synthetic/demo --gt-format synthetic --out results/geo
    python -m eval.geometry --pred outputs/bonn --gt data/bonn --gt-format bonn --align scale&shift --out results/bonn
    python -m eval.geometry --pred outputs/sintel --gt data/Sintel/training --gt-format sintel --out results/sintel
    python -m eval.geometry --pred out/vggt out/page4d --gt data/synthetic/demo --gt-format synthetic --out results/cmp

``--pred`` is one inference output (``OUT/geometry/``) or a folder of them named like the ground truth's sequences;
``--gt`` one sequence or a dataset root of ``--gt-format`` (the forms: ``eval/geometry/readers.py``). Depth follows
``eval/geometry/depth.py`` (one alignment per sequence, valid 0 < gt < 70, Sintel clipped at 70, dataset figures
weighted by valid pixels), poses ``eval/geometry/poses.py`` (evo, Sim(3), RPE over 1 frame). Writes
``results.json``, ``results.md`` and ``error_maps/<sequence>/<key>.png``; bad input ends in one ``error:`` line
(exit code 2) before anything is written. Several ``--pred`` folders (e.g. one per backbone, from
``inference.run --geometry-only``) are each scored into ``--out/<folder name>/`` and compared, one row each, in
``--out/comparison.md`` (their order in ``comparison.json``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from eval.geometry.depth import (
    ALIGN_MODES,
    LAD_LR,
    LAD_MAX_ITERS,
    LAD_TOL,
    LAD_TOLERANCE,
    MAX_DEPTH,
    resize_to,
    score_depth,
)
from eval.geometry.poses import identity_baseline, pose_metrics
from eval.geometry.readers import (
    GT_FORMATS,
    GroundTruthError,
    Prediction,
    PredictionError,
    SequenceGT,
    is_prediction,
    is_sequence,
    read_gt_depth,
    read_prediction,
    read_prediction_depth,
    read_sequence,
    sequence_names,
)
from eval.geometry.report import compare_table, error_picture, summarize, to_markdown, to_text
from utils.cli import UserError, add_device_arg, add_logging_args, cli_main, setup_logging_from
from utils.io import atomic_path, save_json_atomic

logger = logging.getLogger(__name__)
#: the published video-depth script clips the aligned prediction at 70 for Sintel only
DEFAULT_CLIP = {"sintel": 70.0}
CONSTANT_DEPTH = 1.0


def pair_sequences(pred: Path, gt: Path, fmt: str, names: Sequence[str] | None = None
                   ) -> list[tuple[str, Path, str | None]]:
    """(sequence name, prediction folder, ground-truth sequence name or None = ``gt`` itself) to score."""
    if not pred.is_dir():
        raise PredictionError("prediction folder not found", pred, "pass the --out folder of python -m inference.run")
    if not gt.is_dir():
        raise GroundTruthError("ground-truth folder not found", gt, "pass a sequence or a dataset root")
    if is_prediction(pred):
        if is_sequence(gt, fmt):
            return [(gt.name, pred, None)]
        avail = sequence_names(gt, fmt)
        if names:
            if len(names) != 1:
                raise UserError("one prediction folder but several --sequences", pred,
                                "pass a folder of predictions named like the sequences, or one --sequences name")
            name = names[0]
        elif pred.name in avail:
            name = pred.name
        else:
            raise GroundTruthError(f"which sequence of this {fmt} root does {pred.name!r} predict?", gt,
                                   f"name it with --sequences (one of {avail[:8]})" if avail else
                                   _no_sequences(fmt))
        if name not in avail:
            raise GroundTruthError(f"no sequence {name!r}", gt, f"sequences here: {avail[:8]}")
        return [(name, pred, name)]
    preds = sorted(p.name for p in pred.iterdir() if is_prediction(p))
    if not preds:
        raise PredictionError("neither an inference output (geometry/cameras.json) nor a folder of them", pred,
                              "pass the --out folder of python -m inference.run")
    if is_sequence(gt, fmt):
        raise UserError("a folder of predictions against one ground-truth sequence", gt,
                        "pass the dataset root as --gt, or one prediction folder as --pred")
    avail = set(sequence_names(gt, fmt))
    chosen = list(names) if names else preds
    for n in chosen:
        if n not in preds:
            raise PredictionError(f"no prediction for sequence {n!r}", pred / n, "run inference on it or drop it")
        if n not in avail:
            raise GroundTruthError(f"no ground truth for sequence {n!r}", gt / n, _no_sequences(fmt))
    return [(n, pred / n, n) for n in chosen]


def _no_sequences(fmt: str) -> str:
    from eval.geometry.readers import _FORM_HINT

    return _FORM_HINT[fmt]


def _stack_gt(gt: SequenceGT, keys: list[str]) -> np.ndarray:
    maps = [read_gt_depth(gt, k) for k in keys]
    shapes = {m.shape for m in maps}
    if len(shapes) > 1:
        bad = next(k for k, m in zip(keys, maps, strict=True) if m.shape != maps[0].shape)
        raise GroundTruthError(f"ground-truth depth maps of different sizes ({sorted(shapes)})", gt.depth_files[bad],
                               "a sequence's depth maps share one size: restore the file")
    return np.stack(maps)


def _stack_pred(pred: Prediction, keys: list[str], hw: tuple[int, int]) -> np.ndarray:
    out = np.empty((len(keys),) + tuple(hw), dtype=np.float32)
    for i, k in enumerate(keys):
        d = read_prediction_depth(pred, k)
        if abs(d.shape[1] / d.shape[0] - hw[1] / hw[0]) > 0.01 * hw[1] / hw[0]:
            logger.warning("%s: prediction %dx%d and ground truth %dx%d differ in aspect ratio; resizing stretches it",
                           k, d.shape[1], d.shape[0], hw[1], hw[0])
        out[i] = resize_to(d, hw)
    return out


def _check_frames(pred: Prediction, gt: SequenceGT) -> None:
    """Every predicted frame has ground truth (a key of the sequence) and, when the sequence has poses, a pose."""
    have = set(gt.keys)
    missing = [k for k in pred.keys if k not in have]
    if missing:
        raise GroundTruthError(f"{len(missing)} predicted frame(s) have no ground truth (first: {missing[0]})",
                               gt.root, "check that the prediction was run on this sequence's frames")
    lacking = [k for k in pred.keys if gt.c2w and k not in gt.c2w]
    if lacking:
        raise GroundTruthError(f"{len(lacking)} frame(s) have no ground-truth pose (first: {lacking[0]})",
                               gt.root, "a trajectory needs a pose for every frame")


def score_sequence(name: str, pred: Prediction, gt: SequenceGT, align: str, max_depth: float | None,
                   clip_max: float | None, error_max: float = 0.5, device: str = "cpu", pictures: bool = True
                   ) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """One sequence's row (contract keys, alignment, sanity rows) and its error pictures [(key, BGR image)]
    (none when ``pictures`` is False)."""
    _check_frames(pred, gt)
    keys = list(pred.keys)
    row: dict[str, Any] = {"sequence": name, "frames": len(keys), "gt_frames": len(gt.keys),
                           "backbone": pred.backbone, "notes": []}
    sanity: dict[str, dict[str, Any]] = {"gt_vs_gt": {}, "constant_depth": {}, "identity_trajectory": {}}
    pics = []
    if gt.read_depth is not None and gt.depth_files:
        G = _stack_gt(gt, keys)
        P = _stack_pred(pred, keys, G.shape[1:])
        res = score_depth(P, G, align, max_depth, clip_max, device)
        row.update(res.metrics)
        row.update({"scale": res.scale, "shift": res.shift, "lad_steps": res.lad_steps})
        sanity["gt_vs_gt"].update(score_depth(G.copy(), G, align, max_depth, clip_max, device).metrics)
        sanity["constant_depth"].update(
            score_depth(np.full(G.shape, CONSTANT_DEPTH, np.float32), G, align, max_depth, clip_max, device).metrics)
        aligned = res.scale * P + res.shift
        if clip_max is not None:
            aligned = np.minimum(aligned, clip_max)
        for i, k in enumerate(keys if pictures else []):
            title = f"{name} / {k}  align {align}  (s={res.scale:.4g}, t={res.shift:.4g})"
            pics.append((k, error_picture(G[i], aligned[i], res.error[i], title, error_max)))
    else:
        row.update({k: None for k in ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1", "delta_2", "delta_3")})
        row["valid_pixels"] = 0
        row["notes"].append("no ground-truth depth for this sequence: poses only")
        for s in ("gt_vs_gt", "constant_depth"):
            sanity[s].update({"valid_pixels": 0})
    if gt.c2w:
        gt_c2w = np.stack([gt.c2w[k] for k in keys])
        est_c2w = np.stack([pred.c2w[k] for k in keys])
        poses = pose_metrics(gt_c2w, est_c2w)
        if "pose_note" in poses:
            row["notes"].append(poses.pop("pose_note"))
        row.update(poses)
        gg = pose_metrics(gt_c2w, gt_c2w)
        gg.pop("pose_note", None)
        sanity["gt_vs_gt"].update(gg)
        sanity["identity_trajectory"].update(identity_baseline(gt_c2w))
        if gt.assoc_dt:
            row["max_timestamp_gap_s"] = max(gt.assoc_dt[k] for k in keys)
    else:
        row.update({"ate": None, "rpe_trans": None, "rpe_rot": None})
        row["notes"].append("no ground-truth poses")
    for s in sanity.values():
        for k in ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1", "delta_2", "delta_3", "ate", "rpe_trans",
                  "rpe_rot"):
            s.setdefault(k, None)
        s.setdefault("valid_pixels", 0)
    sanity["identity_trajectory"]["valid_pixels"] = None  # a pose-only row
    row["sanity"] = sanity
    return row, pics


def read_inputs(pred: str | Path, gt: str | Path, gt_format: str, sequences: Sequence[str] | None = None
                ) -> list[tuple[str, Prediction, SequenceGT]]:
    """(sequence name, prediction, ground truth) of every sequence to score, each read and checked (cameras,
    frame lists); one :class:`~utils.cli.UserError` for the first problem."""
    pairs = pair_sequences(Path(pred), Path(gt), gt_format, sequences)
    inputs = [(name, read_prediction(pdir), read_sequence(Path(gt), gt_format, gname)) for name, pdir, gname in pairs]
    for _, p, g in inputs:
        _check_frames(p, g)
    return inputs


def evaluate_geometry(pred: str | Path, gt: str | Path, gt_format: str, out: str | Path | None,
                      align: str = "scale&shift", sequences: Sequence[str] | None = None,
                      max_depth: float | None = MAX_DEPTH, clip_max: float | None | str = "auto",
                      error_maps: bool = True, error_max: float = 0.5, progress: bool = True,
                      device: str = "cpu") -> dict[str, Any]:
    """Score, then (when ``out`` is given) write ``results.json``, ``results.md`` and the error pictures.

    Every sequence's cameras and frame lists are read and checked first; the error pictures of scored sequences are
    staged in a hidden sibling folder of ``out`` (so memory stays one sequence) and moved in only when everything is
    scored, so a bad input writes nothing. The demo calls this and prints :func:`eval.geometry.report.to_text`.
    """
    if gt_format not in GT_FORMATS:
        raise UserError(f"unknown --gt-format {gt_format!r}", None, f"use one of {', '.join(GT_FORMATS)}")
    if align not in ALIGN_MODES:
        raise UserError(f"unknown --align {align!r}", None, f"use one of {', '.join(ALIGN_MODES)}")
    if clip_max == "auto":
        clip_max = DEFAULT_CLIP.get(gt_format)
    return score_inputs(read_inputs(pred, gt, gt_format, sequences), gt_format, out, align, max_depth, clip_max,
                        error_maps, error_max, progress, device)


def score_inputs(inputs: list[tuple[str, Prediction, SequenceGT]], gt_format: str, out: str | Path | None,
                 align: str, max_depth: float | None, clip_max: float | None, error_maps: bool, error_max: float,
                 progress: bool, device: str) -> dict[str, Any]:
    """The scoring and writing of :func:`evaluate_geometry`, on inputs :func:`read_inputs` has read and checked
    (``clip_max`` resolved)."""
    out = Path(out) if out is not None else None
    staging = out.parent / f".{out.name}.error_maps.partial" if out is not None and error_maps else None
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    rows = []
    try:
        for name, p, g in tqdm(inputs, desc="sequences", disable=not progress or len(inputs) < 2):
            row, pics = score_sequence(name, p, g, align, max_depth, clip_max, error_max, device, staging is not None)
            rows.append(row)
            for key, img in pics:
                path = staging / name / f"{key}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                ok, buf = cv2.imencode(".png", img)
                path.write_bytes(buf.tobytes())
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    protocol = {"gt_format": gt_format, "align": align, "max_depth": max_depth, "clip_max": clip_max,
                "depth_resize": "cv2.INTER_CUBIC to the ground-truth size",
                "lad": {"optimizer": "Adam", "lr": LAD_LR, "max_iters": LAD_MAX_ITERS, "tol": LAD_TOL,
                        "start": "s = median(gt)/median(pred) (lower median), t = 0",
                        "stated_tolerance_relative": LAD_TOLERANCE},
                "scale": "Weiszfeld, 10 steps, float64", "dataset_depth": "weighted by valid_pixels",
                "dataset_poses": "mean over sequences", "evo_version": version("evo"), "device": str(device),
                "ate": "APE translation, Sim(3) Umeyama (correct_scale), RMSE",
                "rpe": "delta 1 frame, Sim(3) Umeyama (correct_scale), RMSE; rotation in degrees"}
    summary = summarize(rows, protocol)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if staging is not None:
            for seq_dir in sorted(p for p in staging.iterdir() if p.is_dir()) if staging.is_dir() else []:
                dest = out / "error_maps" / seq_dir.name
                shutil.rmtree(dest, ignore_errors=True)  # a previous run's pictures of this sequence
                dest.parent.mkdir(parents=True, exist_ok=True)
                seq_dir.rename(dest)
            shutil.rmtree(staging, ignore_errors=True)
        with atomic_path(out / "results.md") as tmp:
            tmp.write_text(to_markdown(summary))
        save_json_atomic(summary, out / "results.json")  # last: its presence means a complete evaluation
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.geometry", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, nargs="+",
                   help="an inference output (holds geometry/cameras.json and geometry/depth/) or a folder of them "
                        "named like the ground truth's sequences; several (distinct folder names): each scored into "
                        "--out/<name>/ and compared one row each (--out/comparison.md), e.g. one per backbone")
    p.add_argument("--gt", required=True, help="one ground-truth sequence or a dataset root (forms per --gt-format: "
                   "tum/bonn <seq>/ with rgb.txt; sintel <Sintel>/training; hypernerf <scene>/ with camera/; "
                   "synthetic <scene>/ with gt/geometry/)")
    p.add_argument("--gt-format", required=True, choices=GT_FORMATS, help="the ground truth's dataset layout")
    p.add_argument("--align", default="scale&shift", choices=ALIGN_MODES,
                   help="depth alignment, one per sequence: scale&shift (LAD by Adam, default), scale (Weiszfeld), "
                        "median (median ratio), metric (none)")
    p.add_argument("--out", required=True, help="output folder for results.json, results.md and error_maps/")
    p.add_argument("--sequences", nargs="+", default=None,
                   help="score only these sequences of a dataset root (and name the sequence a single prediction "
                        "folder predicts)")
    p.add_argument("--max-depth", type=float, default=MAX_DEPTH,
                   help=f"valid pixels have 0 < gt < this (default {MAX_DEPTH:g}, the video-depth script's)")
    p.add_argument("--clip-max", default="auto",
                   help="clip the aligned prediction to at most this; 'auto' (default) = 70 for sintel, none "
                        "otherwise (as the published script); 'none' = never")
    p.add_argument("--no-error-maps", action="store_true", help="do not write the per-frame error pictures")
    p.add_argument("--error-max", type=float, default=0.5,
                   help="the abs-rel error shown as the brightest colour of the error pictures (default 0.5)")
    add_device_arg(p, "auto", " of the depth fit (auto: CUDA when present, as the published script; the LAD fit "
                              "takes ~1 s per step on two CPU cores for a Sintel-size sequence)")
    add_logging_args(p)
    return p


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}, but CUDA is not available", None, "pass --device cpu")
    return name


@cli_main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    setup_logging_from(args)
    clip: float | None
    if args.clip_max in ("auto", "none"):
        clip = None if args.clip_max == "none" else DEFAULT_CLIP.get(args.gt_format)
    else:
        try:
            clip = float(args.clip_max)
        except ValueError:
            raise UserError(f"--clip-max {args.clip_max!r} is not a number", None, "pass a number, auto or none") from None
    device = _device(args.device)
    if len(args.pred) == 1:
        summary = evaluate_geometry(args.pred[0], args.gt, args.gt_format, args.out, args.align, args.sequences,
                                    args.max_depth, clip, not args.no_error_maps, args.error_max,
                                    progress=not args.quiet, device=device)
        print(to_text(summary))
        print(f"results: {Path(args.out) / 'results.json'}")
        return summary
    inputs = {}
    for p in args.pred:  # every input read and checked (once) before anything is written
        if not is_prediction(Path(p)):
            raise PredictionError("not an inference output (no geometry/cameras.json)", Path(p),
                                  "with several --pred, pass one inference --out folder each")
        inputs[p] = read_inputs(p, args.gt, args.gt_format, args.sequences)

    def score(pred: str, out: Path) -> dict[str, Any]:
        return score_inputs(inputs[pred], args.gt_format, out, args.align, args.max_depth, clip,
                            not args.no_error_maps, args.error_max, not args.quiet, device)

    return compare(args.pred, Path(args.out), score)


def compare(preds: Sequence[str], out: Path, score) -> dict[str, Any]:
    """Score each prediction folder into ``out/<folder name>/`` (``score(pred, out)``), then write and print the
    comparison (:func:`eval.geometry.report.compare_table`). The results are staged in a hidden sibling folder
    and moved in when every prediction is scored: a prediction that fails leaves ``out`` as it was."""
    names = [Path(p).name for p in preds]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"several --pred folders share the name {dup[0]!r}", None,
                        "give the predictions distinct folder names (each is scored into --out/<name>/)")
    staging = out.parent / f".{out.name}.compare.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        summaries = {name: score(p, staging / name) for name, p in zip(names, preds, strict=True)}
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.rmtree(out / name, ignore_errors=True)  # a previous comparison's results of this prediction
            (staging / name).rename(out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    table = compare_table(list(summaries.items()))
    with atomic_path(out / "comparison.md") as tmp:
        tmp.write_text("# Geometry of several predictions on the same ground truth\n\n" + table + "\n")
    save_json_atomic({"predictions": names, "pred_folders": [str(Path(p).resolve()) for p in preds]},
                     out / "comparison.json")
    print(table)
    print(f"results: {out / 'comparison.md'} (each: {out}/<name>/results.json)")
    return {"predictions": summaries}
