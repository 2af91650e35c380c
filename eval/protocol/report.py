"""Result tables: per-query, per-scene and overall, as a JSON-ready dict and a Markdown document.

Scene mIoU / mAcc = mean over its time-agnostic queries of the per-query mean over annotated frames;
scene Acc / vIoU = mean over its state queries. Overall = plain mean over scenes (as in the papers).
Annotations the reader skipped (``skipped_annotations`` of a scene result, see ``preprocess/annotations.py``) are
counted in ``overall.n_skipped_annotations`` and listed in the Markdown report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return float(sum(xs) / len(xs)) if xs else float("nan")


def summarize(scene_results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"scenes": [...scene results...], "overall": {miou, macc, acc, viou, n_scenes, n_ts_scenes}}``.

    Time-sensitive averages run over the scenes that have a time-sensitive block.
    """
    ta = [r["time_agnostic"] for r in scene_results if r.get("time_agnostic")]
    ts = [r["time_sensitive"] for r in scene_results if r.get("time_sensitive")]
    overall = {
        "miou": _mean([t["miou"] for t in ta]),
        "macc": _mean([t["macc"] for t in ta]),
        "acc": _mean([t["acc"] for t in ts]),
        "viou": _mean([t["viou"] for t in ts]),
        "n_scenes": len(scene_results),
        "n_ts_scenes": len(ts),
        "n_skipped_annotations": sum(len(r.get("skipped_annotations") or []) for r in scene_results),
    }
    return {"scenes": list(scene_results), "overall": overall}


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100.0 * x:.2f}"


def to_markdown(summary: dict[str, Any]) -> str:
    """Markdown with an overall table, a per-scene table and per-query tables (values in percent)."""
    ov = summary["overall"]
    lines = ["# Evaluation results (4D LangSplat protocol)", "",
             "mAcc = per-frame pixel accuracy (TP+TN)/(H*W), averaged like mIoU (not defined in the published code).",
             "", "## Overall (mean over scenes)", "",
             "| mIoU | mAcc | Acc | vIoU | scenes |", "|---|---|---|---|---|",
             f"| {_pct(ov['miou'])} | {_pct(ov['macc'])} | {_pct(ov['acc'])} | {_pct(ov['viou'])} | {ov['n_scenes']} |",
             "", "## Per scene", "", "| scene | mIoU | mAcc | Acc | vIoU |", "|---|---|---|---|---|"]
    for r in summary["scenes"]:
        ta, ts = r.get("time_agnostic") or {}, r.get("time_sensitive") or {}
        lines.append(f"| {r['scene']} | {_pct(ta.get('miou'))} | {_pct(ta.get('macc'))} | "
                     f"{_pct(ts.get('acc'))} | {_pct(ts.get('viou'))} |")
    skipped = [(r["scene"], a) for r in summary["scenes"] for a in r.get("skipped_annotations") or []]
    if skipped:
        lines += ["", f"## Skipped annotations ({len(skipped)})", "",
                  "Left out of the ground truth (a category whose only annotation in a frame is skipped is not "
                  "scored on that frame).", "",
                  "| scene | annotation | image | category | reason |", "|---|---|---|---|---|"]
        for scene, a in skipped:
            lines.append(f"| {scene} | {a.get('annotation')} | {a.get('image') or '-'} | {a.get('category') or '-'} "
                         f"| {a.get('reason')} |")
    for r in summary["scenes"]:
        ta, ts = r.get("time_agnostic") or {}, r.get("time_sensitive") or {}
        lines += ["", f"## {r['scene']}: time-agnostic queries", "",
                  "| query | mIoU | mAcc | frames | levels chosen |", "|---|---|---|---|---|"]
        for name, q in ta.get("queries", {}).items():
            levels = ", ".join(f"{k}:{v}" for k, v in q.get("level_counts", {}).items())
            lines.append(f"| {name} | {_pct(q['miou'])} | {_pct(q['macc'])} | {len(q['frames'])} | {levels} |")
        if ts:
            lines += ["", f"## {r['scene']}: time-sensitive queries", "",
                      "| object | state query | Acc | vIoU | frames |", "|---|---|---|---|---|"]
            for q in ts.get("queries", []):
                lines.append(f"| {q['object']} | {q['query']} | {_pct(q['acc'])} | {_pct(q['viou'])} | "
                             f"{len(q['frames'])} |")
    return "\n".join(lines) + "\n"
