"""Geometry results: ``results.json`` (per sequence and overall, sanity rows beside the prediction's), the
Markdown table ``results.md`` and the labelled per-frame error pictures."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from eval.geometry.depth import METRIC_KEYS, weighted_average
from eval.geometry.poses import POSE_KEYS, mean_pose_metrics

SANITY_ROWS = {
    "gt_vs_gt": "ground truth scored against itself (must be 0 errors, δ = 1)",
    "constant_depth": "trivial baseline: the same depth (1.0) at every pixel",
    "identity_trajectory": "trivial baseline: a camera that never moves",
}
CONTRACT_KEYS = METRIC_KEYS + ("valid_pixels",) + POSE_KEYS


def overall(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Depth: weighted by valid pixels (the published dataset figure); poses: plain mean over sequences."""
    return {**weighted_average(rows), **mean_pose_metrics(rows)}


def summarize(seq_rows: list[dict[str, Any]], protocol: dict[str, Any]) -> dict[str, Any]:
    """``{"protocol", "sequences", "overall"}``; ``overall`` and each sequence carry the contract keys and a
    ``sanity`` block with the rows of :data:`SANITY_ROWS`."""
    ov = overall(seq_rows)
    ov["sequences"] = len(seq_rows)
    ov["frames"] = sum(r["frames"] for r in seq_rows)
    ov["sanity"] = {name: overall([r["sanity"][name] for r in seq_rows]) for name in SANITY_ROWS}
    ov["sanity"]["identity_trajectory"]["valid_pixels"] = None  # a pose-only row
    return {"protocol": protocol, "sequences": seq_rows, "overall": ov}


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


_HEAD = ("| row | Abs Rel | Sq Rel | RMSE | log RMSE | δ<1.25 | δ<1.25² | δ<1.25³ | valid px | ATE | RPE trans | "
         "RPE rot (°) |")
_RULE = "|---|" + "---|" * 11


def _row(name: str, r: dict[str, Any]) -> str:
    return "| " + name + " | " + " | ".join(_fmt(r.get(k)) for k in CONTRACT_KEYS) + " |"


def to_markdown(summary: dict[str, Any]) -> str:
    """Markdown: the protocol, the overall table (prediction + sanity rows), one table per sequence."""
    p, ov = summary["protocol"], summary["overall"]
    lines = ["# Geometry evaluation (video depth and camera poses)", "",
             f"Ground truth: `{p['gt_format']}`; depth alignment: `{p['align']}` (one per sequence); valid pixels "
             f"0 < gt < {p['max_depth']}; aligned prediction "
             f"{'clipped at ' + format(p['clip_max'], 'g') if p['clip_max'] is not None else 'not clipped'}; dataset depth figures "
             "weighted by valid pixels, pose figures averaged over sequences. Poses with evo "
             f"{p['evo_version']}: ATE after Sim(3) Umeyama, RPE over 1 frame, RMSE.", "",
             "Sanity rows: " + "; ".join(f"`{k}` = {v}" for k, v in SANITY_ROWS.items()) + ".", "",
             f"## Overall ({ov['sequences']} sequences, {ov['frames']} frames)", "", _HEAD, _RULE,
             _row("prediction", ov)]
    if is_random_backbone(summary):
        lines[-3:-3] = ["Predictions of a random tiny backbone: the figures are a baseline, not a model's.", ""]
    lines += [_row(f"`{k}`", ov["sanity"][k]) for k in SANITY_ROWS]
    for r in summary["sequences"]:
        lines += ["", f"## {r['sequence']} ({r['frames']} frames)", ""]
        if r.get("notes"):
            lines += [f"- {n}" for n in r["notes"]] + [""]
        lines += [_HEAD, _RULE, _row("prediction", r)] + [_row(f"`{k}`", r["sanity"][k]) for k in SANITY_ROWS]
    return "\n".join(lines) + "\n"


def to_text(summary: dict[str, Any]) -> str:
    """A few lines for a terminal: the overall prediction and sanity rows."""
    ov = summary["overall"]
    keys = ("abs_rel", "delta_1", "ate", "rpe_trans", "rpe_rot")
    out = [f"geometry ({summary['protocol']['gt_format']}, align {summary['protocol']['align']}, "
           f"{ov['sequences']} sequences):  " + "  ".join(f"{k:>9}" for k in keys)]
    for name, r in [("prediction", ov)] + [(k, ov["sanity"][k]) for k in SANITY_ROWS]:
        out.append(f"  {name:<22}" + "  ".join(f"{_fmt(r.get(k)):>9}" for k in keys))
    if is_random_backbone(summary):
        out.append("  (predictions of a random tiny backbone: a baseline, not a model's figure)")
    return "\n".join(out)


def is_random_backbone(summary: dict[str, Any]) -> bool:
    """True when a scored prediction came from a random tiny backbone (``[<family>-]tiny-random-seed<N>`` in its
    meta.json)."""
    return any(is_random_id(r.get("backbone")) for r in summary["sequences"])


def is_random_id(backbone_id: str | None) -> bool:
    """A backbone identity of a seeded random tiny model (``tiny-random-seed0``, ``vggt-tiny-random-seed0``)."""
    return "tiny-random-seed" in str(backbone_id or "")


def backbone_of(summary: dict[str, Any]) -> str | None:
    """The backbone identity the scored predictions record (several joined by ', '), or None."""
    ids = sorted({str(r["backbone"]) for r in summary["sequences"] if r.get("backbone")})
    return ", ".join(ids) or None


_CMP_KEYS = ("abs_rel", "delta_1", "ate", "rpe_trans", "rpe_rot")


def compare_table(labelled: list[tuple[str, dict[str, Any]]]) -> str:
    """Markdown: one row per scored prediction (e.g. one per backbone on the same ground truth), overall figures,
    the weights said beside each (a random tiny backbone is a pipeline baseline, not the model's figure), then the
    first summary's trivial-baseline rows."""
    lines = ["| prediction | backbone | weights | Abs Rel | δ<1.25 | ATE | RPE trans | RPE rot (°) |",
             "|---|---|---|---|---|---|---|---|"]
    for label, summary in labelled:
        weights = ("RANDOM tiny: a pipeline baseline, not the model's figure" if is_random_backbone(summary)
                   else "weights file")
        lines.append(f"| {label} | {backbone_of(summary) or '-'} | {weights} | "
                     + " | ".join(_fmt(summary["overall"].get(k)) for k in _CMP_KEYS) + " |")
    if labelled:
        sanity = labelled[0][1]["overall"]["sanity"]
        for name in ("constant_depth", "identity_trajectory"):
            lines.append(f"| `{name}` | - | trivial baseline | "
                         + " | ".join(_fmt(sanity[name].get(k)) for k in _CMP_KEYS) + " |")
    return "\n".join(lines)


def _colour(x: np.ndarray, lo: float, hi: float, mask: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3) uint8 BGR turbo colours of ``x`` in [lo, hi]; black where ``mask`` is False."""
    t = np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    img = cv2.applyColorMap((np.nan_to_num(t) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    img[~mask] = 0
    return img


def _label(img: np.ndarray, text: str) -> np.ndarray:
    band = np.zeros((22, img.shape[1], 3), np.uint8)
    cv2.putText(band, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([band, img], axis=0)


def error_picture(gt: np.ndarray, aligned: np.ndarray, error: np.ndarray, title: str, error_max: float) -> np.ndarray:
    """One frame's labelled picture (BGR uint8): ground-truth depth | aligned prediction | ``|p − g| / g``.

    Depth panels share the ground truth's 2-98 % range (turbo, near = blue); the error panel maps 0 .. ``error_max``
    (clipped) to turbo; black = no valid ground truth.
    """
    valid = np.isfinite(error)
    vals = gt[valid]
    lo, hi = (np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0))
    mean = float(np.nanmean(error)) if vals.size else float("nan")
    up = max(1, int(np.ceil(240 / gt.shape[1])))  # small frames are enlarged so the labels fit

    def big(img: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(img, up, axis=0), up, axis=1) if up > 1 else img

    panels = [_label(big(_colour(gt, lo, hi, valid)), f"ground truth {lo:.3g}..{hi:.3g}"),
              _label(big(_colour(aligned, lo, hi, np.isfinite(aligned))), "aligned prediction (same scale)"),
              _label(big(_colour(np.nan_to_num(error), 0.0, error_max, valid)),
                     f"|p-g|/g 0..{error_max:g}, mean {mean:.4f}")]
    img = np.concatenate(panels, axis=1)
    return _label(img, title)
