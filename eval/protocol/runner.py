"""The 4D LangSplat evaluation protocol runner (time-agnostic mIoU/mAcc, time-sensitive Acc/vIoU) and its CLI.

    python -m eval.evaluate --scene data/hypernerf/americano --fields outputs/americano \
        --autoencoder ckpt/autoencoder/americano --out results/americano     # open_clip ViT-B-16 laion2b
    python -m eval.evaluate --scene data/synthetic/demo --targets --clip tiny --out results/oracle

Protocol (docs/architecture.md §6): per annotated frame and COCO category, LERF relevancy of the category
name on each level -> smoothed, normalised, thresholded, cleaned mask; level = highest smoothed max;
IoU and pixel accuracy against the polygon mask. Time-sensitive: per state query of
``video_annotations.json`` and per annotated frame of its object, the relevancy mask of the state text at the
chosen level (before the 7x7 cleanup) selects pixels of the time-sensitive field; the frame score is their
mean cosine with the query embedding; scores are smoothed, thresholded at their raw mean, and give Acc and
vIoU (IoU_t = the cleaned mask's IoU with the object's GT mask).

Bad input ends in one ``error: <what> (<file>): <fix>`` line (exit code 2) before anything is written: a missing
or empty --scene / --fields / --renders folder, malformed annotations (see ``preprocess/annotations.py``), an annotated
frame the scene does not have, unreadable or inconsistent fields / targets (see ``eval/protocol/fields.py``), a file given
to --autoencoder that is not one. Annotations skipped by the reader (polygons with fewer than 3 points ...) are
listed per scene in ``results.json`` (``skipped_annotations``) and ``results.md``. ``results.json`` is valid JSON
(an undefined mean is ``null``) and two runs write the same bytes.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from eval.protocol.fields import (
    FieldsError,
    FieldsMissingError,
    FieldSource,
    GroundTruthFields,
    OurFields,
    RendersNpyFields,
    TargetFields,
)
from eval.protocol.metrics import (
    SMOOTH_WEIGHTS,
    mask_iou,
    pixel_accuracy,
    smooth_scores,
    temporal_accuracy,
    temporal_predictions,
    temporal_threshold,
    video_iou,
)
from eval.protocol.report import summarize, to_markdown
from eval.query.decode import Decoder, autoencoder_decoder
from eval.query.masks import CLEANUP_KERNEL, MASK_THRESHOLD, SMOOTH_KERNEL, masks_from_relevancy
from eval.query.relevancy import CANONICAL_NEGATIVES, TEMPERATURE, RelevancyModel, TextEncoder
from preprocess.annotations import (
    COCO_RELPATH,
    VIDEO_RELPATH,
    AnnotationError,
    CocoFrames,
    in_intervals,
    key_to_index,
    load_coco_masks,
    load_video_annotations,
)
from utils.cli import (
    UserError,
    add_device_arg,
    add_logging_args,
    cli_main,
    json_safe,
    require_path,
    setup_logging_from,
)
from utils.device import resolve_device
from utils.io import atomic_path, save_json_atomic

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Protocol constants (defaults = the published 4D LangSplat settings)."""

    threshold: float = MASK_THRESHOLD
    smooth_kernel: int = SMOOTH_KERNEL
    cleanup_kernel: int = CLEANUP_KERNEL
    temperature: float = TEMPERATURE
    negatives: tuple[str, ...] = CANONICAL_NEGATIVES
    smooth_weights: tuple[float, float, float] = SMOOTH_WEIGHTS


def _to_size(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (..., h, w) maps to ``size`` (no-op if equal)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    lead = maps.shape[:-2]
    y = F.interpolate(maps.reshape(-1, 1, *maps.shape[-2:]).float(), size=size, mode="bilinear", align_corners=False)
    return y.reshape(*lead, *size)


def _frame_rgb(scene_dir: Path | None, index: int, dataset: str, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 (H, W, 3) of the frame for overlays (grey if the image is not found)."""
    import cv2

    if scene_dir is not None:
        cands = ([scene_dir / "rgb" / "2x" / f"{index + 1:06d}.png"] if dataset == "hypernerf"
                 else [scene_dir / "cam00" / "images" / f"{index:04d}.png"])
        for c in cands:
            if c.is_file():
                bgr = cv2.imread(str(c), cv2.IMREAD_COLOR)
                if bgr is not None:
                    if bgr.shape[:2] != size:
                        bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
                    return bgr[..., ::-1].copy()
    return np.full((*size, 3), 128, np.uint8)


def write_overlay(path: Path, rgb: np.ndarray, pred: np.ndarray, gt: np.ndarray | None, title: str = "") -> None:
    """PNG: prediction tinted red over ``rgb`` (H, W, 3), GT contour in green, labelled with ``title`` (the query
    and the chosen level) and a legend."""
    import cv2

    from inference.visualize import annotate, save_png

    img = rgb.astype(np.float32).copy()
    p = pred.astype(bool)
    img[p] = 0.5 * img[p] + 0.5 * np.array([255.0, 0.0, 0.0])
    out = np.ascontiguousarray(img.clip(0, 255).astype(np.uint8))
    if gt is not None:
        contours, _ = cv2.findContours(gt.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, (0, 255, 0), 1)
    if title:
        out = annotate(out, title, colorbar=False, legend="red: prediction, green: ground truth")
    save_png(path.with_suffix(".png"), out)


def _cosines(feats: torch.Tensor, query: torch.Tensor, decode: Decoder | None, dev: torch.device) -> torch.Tensor:
    """(P, c) features (decoded when ``decode`` is given) -> (P,) cosine with the (D,) query embedding."""
    if decode is not None:
        feats = decode(feats).to(dev)
    feats = F.normalize(feats.float(), dim=-1)
    qe = query.to(dev)
    if feats.shape[-1] != qe.shape[0]:
        raise ValueError(f"time-sensitive feature dim {feats.shape[-1]} != query embedding dim {qe.shape[0]}; "
                         "pass --video-autoencoder or matching query embeddings")
    return feats @ qe


def _scene_frame_indices(scene_dir: Path | None, dataset: str) -> set[int] | None:
    """0-based indices of the scene's own frames (``rgb/2x`` for HyperNeRF, ``cam00/images`` for Neu3D), or None
    when the scene has no such folder (the evaluator only needs the annotations)."""
    if scene_dir is None:
        return None
    folder = scene_dir / ("rgb/2x" if dataset == "hypernerf" else "cam00/images")
    if not folder.is_dir():
        return None
    out = set()
    for p in folder.iterdir():
        if p.is_file() and not p.name.startswith("."):
            try:
                out.add(key_to_index(p.stem, dataset))
            except ValueError:
                continue
    return out or None


def check_frames(coco: CocoFrames, fields: FieldSource, scene_dir: Path | None, dataset: str) -> None:
    """Every annotated frame must be a frame of the scene (else the annotation file is wrong) and have a field
    (else the fields are incomplete): one :class:`UserError` naming the file at fault."""
    available = set(fields.frame_indices())
    missing = [i for i in coco.frame_indices if i not in available]
    if not missing:
        return
    own = _scene_frame_indices(scene_dir, dataset)
    if own is not None:
        foreign = [i for i in missing if i not in own]
        if foreign:
            i = foreign[0]
            raise AnnotationError(
                f"annotated image {coco.file_names[i]!r} is frame {i}, which the scene does not have "
                f"({len(own)} frames, indices {min(own)}..{max(own)})", coco.path or scene_dir,
                "remove the annotation or check the --dataset naming (hypernerf: file number - 1)")
    raise FieldsMissingError(
        f"no field for annotated frame(s) {missing[:10]}{'...' if len(missing) > 10 else ''} "
        f"(the fields hold {len(available)} frames)", fields.location,
        "run inference on the whole sequence")


def _check_latent_sizes(fields: FieldSource, index: int, decode: Decoder | None,
                        video_decode: Decoder | None) -> None:
    """An autoencoder whose latent size is not the fields' feature size is refused up front (decoders made by
    :func:`eval.query.decode.autoencoder_decoder` carry ``check_latent``)."""
    if decode is not None and hasattr(decode, "check_latent"):
        ind = fields.semantic_indexed(index)
        decode.check_latent(int(ind[1].shape[-1] if ind is not None else fields.semantic(index).shape[-1]))
    if video_decode is not None and hasattr(video_decode, "check_latent") and fields.has_video():
        vind = fields.video_indexed(index)
        vfeat = vind[1] if vind is not None else fields.video(index)
        if vfeat is not None:
            video_decode.check_latent(int(vfeat.shape[-1]))


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in s)[:80]


def evaluate_scene(
    scene_dir: str | Path | None,
    fields: FieldSource,
    encode_text: TextEncoder,
    *,
    decode: Decoder | None = None,
    video_decode: Decoder | None = None,
    video_encode_text: TextEncoder | None = None,
    video_query_embeddings: Mapping[str, torch.Tensor] | None = None,
    coco: CocoFrames | None = None,
    video_annotations: Mapping[str, Mapping[str, Sequence[tuple[int, int]]]] | None = None,
    dataset: str = "hypernerf",
    time_sensitive: bool | None = None,
    device: str | torch.device = "auto",
    overlays_dir: str | Path | None = None,
    scene_name: str | None = None,
    config: EvalConfig | None = None,
) -> dict[str, Any]:
    """Run the protocol on one scene.

    Args:
        scene_dir: scene folder (annotations are read from it unless ``coco`` / ``video_annotations`` are given).
        fields: per-frame fields; ``semantic(i)`` (L, H, W, k), ``video(i)`` (H, W, c).
        encode_text: ``list[str] -> (N, D)`` unit embeddings for the relevancy (queries and negatives).
        decode: ``(..., k) -> (..., D)`` for autoencoded semantic fields (None: fields already D-dim).
        video_decode: ``(..., c) -> (..., D')`` for the time-sensitive field (None: already D'-dim).
        video_encode_text: text encoder of the time-sensitive targets (default ``encode_text``).
        video_query_embeddings: precomputed ``{state query: (D',)}`` embeddings (override the encoder).
        time_sensitive: None = run it when video annotations and a video field exist.
        overlays_dir: write PNG overlays there (``<frame>_<query>.png``) when given.

    Returns:
        ``{"scene", "dataset", "time_agnostic": {...}, "time_sensitive": {...} | None}`` (see report.py).
    """
    cfg = config or EvalConfig()
    scene_dir = Path(scene_dir) if scene_dir is not None else None
    coco, video_annotations, run_ts = _annotations(scene_dir, fields, coco, video_annotations, dataset,
                                                   time_sensitive)
    states, vq = _state_queries(video_annotations if run_ts else None, video_query_embeddings,
                                video_encode_text or encode_text)
    run = _SceneRun(fields, RelevancyModel(encode_text, cfg.negatives, cfg.temperature), cfg,
                    resolve_device(device), decode, video_decode, list(fields.levels),
                    Path(overlays_dir) if overlays_dir is not None else None, scene_dir, dataset)
    check_frames(coco, fields, scene_dir, dataset)
    indices = coco.frame_indices
    scored = [i for i in indices if coco.masks[i]]
    # refuse inconsistent inputs before the first score (and before the progress bar)
    fields.check({i: coco.sizes[i] for i in scored})
    if scored:
        _check_latent_sizes(fields, scored[0], decode, video_decode if run_ts else None)

    ta_frames: dict[str, list[dict[str, Any]]] = {}
    ts_frames: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for idx in tqdm(indices, desc=f"eval {scene_name or (scene_dir.name if scene_dir else '')}", leave=False,
                    disable=None):  # no bar when stderr is not a terminal
        gts = coco.masks[idx]
        if not gts:
            continue
        size = coco.sizes[idx]
        cats = list(gts)
        st_queries = [(obj, q) for obj in cats for q, _ in states.get(obj, [])] if run_ts else []
        texts = list(dict.fromkeys(cats + [q for _, q in st_queries]))
        masks = run.masks(idx, texts, size)
        for c in cats:
            ta_frames.setdefault(c, []).append(run.time_agnostic_record(idx, c, masks[c], gts[c], size))
        if st_queries:
            records = run.time_sensitive_records(idx, st_queries, masks, gts, vq, size)
            for key, rec in zip(st_queries, records, strict=True):
                ts_frames.setdefault(key, []).append(rec)

    ta_queries = _time_agnostic_queries(coco, ta_frames)
    result: dict[str, Any] = {
        "scene": scene_name or (scene_dir.name if scene_dir else "scene"),
        "dataset": dataset,
        "levels": run.level_names,
        "time_agnostic": {
            "miou": float(np.mean([q["miou"] for q in ta_queries.values()])) if ta_queries else float("nan"),
            "macc": float(np.mean([q["macc"] for q in ta_queries.values()])) if ta_queries else float("nan"),
            "n_frames": len({f["frame"] for q in ta_queries.values() for f in q["frames"]}),
            "queries": ta_queries,
        },
        "time_sensitive": None,
        "skipped_annotations": list(coco.skipped),
    }
    if run_ts:
        result["time_sensitive"] = _time_sensitive_result(states, ts_frames, coco, cfg)
    return result


def _annotations(scene_dir: Path | None, fields: FieldSource, coco: CocoFrames | None,
                 video_annotations: Mapping[str, Mapping[str, Sequence[tuple[int, int]]]] | None, dataset: str,
                 time_sensitive: bool | None) -> tuple[CocoFrames, Any, bool]:
    """The scene's annotations (read from ``scene_dir`` unless given) and whether the time-sensitive protocol
    runs (``time_sensitive`` None: when video annotations and a video field exist)."""
    if coco is None:
        if scene_dir is None:
            raise ValueError("give scene_dir or coco annotations")
        coco = load_coco_masks(scene_dir, dataset)
    if video_annotations is None and scene_dir is not None and (scene_dir / VIDEO_RELPATH).is_file():
        video_annotations = load_video_annotations(scene_dir)
    run_ts = time_sensitive
    if run_ts is None:
        run_ts = bool(video_annotations) and fields.has_video()
    if run_ts and not video_annotations:
        raise FileNotFoundError(f"time-sensitive evaluation asked but no {VIDEO_RELPATH} in {scene_dir}")
    if run_ts and not fields.has_video():
        raise ValueError("time-sensitive evaluation asked but the fields have no 'video' tensor / video renders")
    return coco, video_annotations, bool(run_ts)


@dataclass
class _SceneRun:
    """What scoring one scene's frames needs: the fields, the relevancy model, the protocol constants, the device,
    the decoders, the level names and where overlays go (None: none written)."""

    fields: FieldSource
    model: RelevancyModel
    cfg: EvalConfig
    dev: torch.device
    decode: Decoder | None
    video_decode: Decoder | None
    level_names: list[str]
    overlays: Path | None
    scene_dir: Path | None
    dataset: str

    def _check_size(self, shape: Sequence[int], idx: int, size: tuple[int, int]) -> None:
        if self.fields.exact_size and tuple(shape[-2:]) != tuple(size):
            raise FieldsError(f"targets of frame {idx} are {shape[-1]}x{shape[-2]} but its annotation is "
                              f"{size[1]}x{size[0]}", self.fields.frame_file(idx),
                              "extract the targets from the annotated frames (same resolution)")

    def masks(self, idx: int, texts: list[str], size: tuple[int, int]) -> dict[str, Any]:
        """The protocol's masks of every text on frame ``idx`` at the annotation's ``size``: relevancy of the
        semantic field (scored per distinct feature row and scattered to pixels when the fields are indexed)."""
        with torch.no_grad():
            ind = self.fields.semantic_indexed(idx)
            if ind is not None:  # few distinct features: score the rows, then scatter to pixels
                imap, rows = ind
                self._check_size(imap.shape, idx, size)
                rows = torch.cat([rows.float(), rows.new_zeros(1, rows.shape[1]).float()]).to(self.dev)
                imap = torch.where(imap < 0, rows.shape[0] - 1, imap).to(self.dev)
                rel = self.model.relevancy(rows, texts, decode=self.decode)[:, imap]  # (Q, L, h, w)
            else:
                feats = self.fields.semantic(idx).to(self.dev)
                self._check_size(feats.shape[:-1], idx, size)
                rel = self.model.relevancy(feats, texts, decode=self.decode)  # (Q, L, h, w)
            rel = _to_size(rel, size)
            c = self.cfg
            return {t: masks_from_relevancy(rel[i], c.threshold, c.smooth_kernel, c.cleanup_kernel)
                    for i, t in enumerate(texts)}

    def time_agnostic_record(self, idx: int, cat: str, m: Any, gt: np.ndarray, size: tuple[int, int]
                             ) -> dict[str, Any]:
        """One category's score on frame ``idx`` (IoU, accuracy, chosen level, IoU per level), and its overlay."""
        pred = m.chosen_clean.cpu().numpy()
        rec = {"frame": idx, "iou": mask_iou(pred, gt), "acc": pixel_accuracy(pred, gt),
               "level": self.level_names[m.level],
               "level_ious": [mask_iou(m.clean[li].cpu().numpy(), gt) for li in range(len(self.level_names))]}
        if self.overlays is not None:
            rgb = _frame_rgb(self.scene_dir, idx, self.dataset, size)
            write_overlay(self.overlays / "time_agnostic" / f"{idx:05d}_{_slug(cat)}", rgb, pred, gt,
                          f"{cat} | {self.level_names[m.level]} level | IoU {rec['iou']:.2f}")
        return rec

    def _video_scorer(self, idx: int, size: tuple[int, int]) -> Callable[[torch.Tensor, torch.Tensor], float]:
        """``score(sel, query)``: the mean cosine of frame ``idx``'s time-sensitive features under the (h, w)
        pixel selection ``sel`` with the query embedding (the field brought to the annotation's ``size``)."""
        vind = self.fields.video_indexed(idx)
        if vind is not None:
            vmap, vrows = vind
            vrows = torch.cat([vrows.float(), vrows.new_zeros(1, vrows.shape[1]).float()]).to(self.dev)
            vmap = torch.where(vmap < 0, vrows.shape[0] - 1, vmap)
            if tuple(vmap.shape) != tuple(size):
                vmap = F.interpolate(vmap[None, None].float(), size=size, mode="nearest")[0, 0].long()
            vmap = vmap.to(self.dev)
            return lambda sel, query: float(_cosines(vrows, query, self.video_decode, self.dev)[vmap[sel]].mean())
        vfeat = self.fields.video(idx)
        assert vfeat is not None
        vfeat = vfeat.to(self.dev)
        if tuple(vfeat.shape[:2]) != tuple(size):
            vfeat = _to_size(vfeat.permute(2, 0, 1), size).permute(1, 2, 0)
        return lambda sel, query: float(_cosines(vfeat[sel], query, self.video_decode, self.dev).mean())

    def time_sensitive_records(self, idx: int, st_queries: list[tuple[str, str]], masks: dict[str, Any],
                               gts: Mapping[str, np.ndarray], vq: Mapping[str, torch.Tensor],
                               size: tuple[int, int]) -> list[dict[str, Any]]:
        """Each ``(object, state query)``'s score on frame ``idx`` (the mean cosine under the query's raw mask,
        0 when it is empty), the cleaned mask's IoU with the object, the level; and its overlay."""
        out = []
        with torch.no_grad():
            score_of = self._video_scorer(idx, size)
            for obj, q in st_queries:
                m = masks[q]
                sel = m.chosen_raw
                score = score_of(sel, vq[q]) if bool(sel.any()) else 0.0
                clean = m.chosen_clean.cpu().numpy()
                out.append({"frame": idx, "score": score, "iou": mask_iou(clean, gts[obj]),
                            "level": self.level_names[m.level]})
                if self.overlays is not None:
                    rgb = _frame_rgb(self.scene_dir, idx, self.dataset, size)
                    write_overlay(self.overlays / "time_sensitive" / f"{idx:05d}_{_slug(q)}", rgb, clean, gts[obj],
                                  f"{q} | {self.level_names[m.level]} level | score {score:.2f}")
        return out


def _state_queries(video_annotations, precomputed, encode_text: TextEncoder
                   ) -> tuple[dict[str, list[tuple[str, list[tuple[int, int]]]]], dict[str, torch.Tensor]]:
    """State queries per object and their unit embeddings for the time-sensitive score (``precomputed``
    embeddings override the encoder); empty without video annotations."""
    states: dict[str, list[tuple[str, list[tuple[int, int]]]]] = {}
    if not video_annotations:
        return states, {}
    for obj, qs in video_annotations.items():
        states[obj] = [(q, list(iv)) for q, iv in qs.items()]
    all_states = [q for qs in states.values() for q, _ in qs]
    vq: dict[str, torch.Tensor] = {}
    pre = dict(precomputed or {})
    todo = [q for q in all_states if q not in pre]
    if todo:
        with torch.no_grad():
            emb = torch.as_tensor(encode_text(todo)).detach().float().cpu()
        vq.update({q: e for q, e in zip(todo, emb, strict=True)})
    vq.update({q: torch.as_tensor(pre[q]).float().cpu().reshape(-1) for q in all_states if q in pre})
    return states, {q: F.normalize(e, dim=0) for q, e in vq.items()}


def _time_agnostic_queries(coco: CocoFrames, ta_frames: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per query: mean IoU and pixel accuracy over its annotated frames, the chosen levels, the frames."""
    out: dict[str, Any] = {}
    for c in coco.categories + [c for c in ta_frames if c not in coco.categories]:
        frs = ta_frames.get(c)
        if not frs:
            continue
        out[c] = {"miou": float(np.mean([f["iou"] for f in frs])), "macc": float(np.mean([f["acc"] for f in frs])),
                  "level_counts": dict(Counter(f["level"] for f in frs)), "frames": frs}
    return out


def _time_sensitive_result(states, ts_frames: dict[tuple[str, str], list[dict[str, Any]]], coco: CocoFrames,
                           cfg: EvalConfig) -> dict[str, Any]:
    """Per state query: the smoothed scores, the published threshold and predictions, Acc and vIoU; and the means."""
    image_pos = {idx: k for k, idx in enumerate(coco.image_order)}
    qres = []
    for obj, qs in states.items():
        for q, intervals in qs:
            frs = sorted(ts_frames.get((obj, q), []), key=lambda f: f["frame"])
            if not frs:
                logger.warning("state query %r: object %r has no annotated frame; skipped", q, obj)
                continue
            raw = np.array([f["score"] for f in frs])
            # published threshold: float32 running mean in its loop order (COCO images), not frame order
            thr = temporal_threshold([f["score"] for f in sorted(frs, key=lambda r: image_pos[r["frame"]])])
            sm = smooth_scores(raw, cfg.smooth_weights)
            pred = temporal_predictions(raw, cfg.smooth_weights, threshold=thr)
            label = np.array([in_intervals(f["frame"], intervals) for f in frs])
            ious = np.array([f["iou"] for f in frs])
            for f, s, p, lab in zip(frs, sm, pred, label, strict=True):
                f.update({"smoothed": float(s), "pred": bool(p), "label": bool(lab)})
            qres.append({"object": obj, "query": q, "intervals": [list(iv) for iv in intervals],
                         "threshold": thr, "acc": temporal_accuracy(pred, label),
                         "viou": video_iou(pred, label, ious), "frames": frs})
    return {"acc": float(np.mean([q["acc"] for q in qres])) if qres else float("nan"),
            "viou": float(np.mean([q["viou"] for q in qres])) if qres else float("nan"),
            "queries": qres}


RESULT_FILES = ("results.json", "results.md")


def write_results(summary: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.json`` (non-finite -> null, valid JSON) and ``results.md`` into ``out_dir``; returns both
    paths. Temporary files a killed earlier run left beside them are removed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        for stale in out.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    save_json_atomic(json_safe(summary), out / "results.json")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(to_markdown(summary))
    return out / "results.json", out / "results.md"


def load_query_embeddings(path: str | Path) -> dict[str, torch.Tensor]:
    """``{query: (D,)}`` from a JSON ``{query: [floats]}`` or a safetensors file (tensor name = query); anything
    else is one :class:`UserError` naming the file."""
    path = require_path(path, "query embeddings file", "check --video-query-embeddings", kind="file")
    fix = "pass a JSON {query: [floats]} or a safetensors file of 1-d tensors named by query"
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
            out = {str(k): torch.tensor(v, dtype=torch.float32).reshape(-1) for k, v in data.items()}
        except json.JSONDecodeError as e:
            raise UserError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})", path, fix) from None
        except (AttributeError, TypeError, ValueError, RuntimeError) as e:
            raise UserError(f"not query embeddings ({type(e).__name__}: {e})", path, fix) from None
    else:
        from model.safe_load import read_safetensors

        out = {k: v.float().reshape(-1) for k, v in read_safetensors(path)[0].items()}  # names the file if bad
    bad = [k for k, v in out.items() if v.numel() == 0 or not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"query embedding {bad[0]!r} is empty or not finite", path, fix)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", action="append", required=True,
                   help="scene folder with annotations/ (repeat for several scenes, paired with --fields/--renders)")
    p.add_argument("--fields", action="append", default=[],
                   help="our inference output (<out> or <out>/fields with <key>.safetensors); one per --scene")
    p.add_argument("--renders", action="append", default=[],
                   help="4D LangSplat layout instead of --fields: three comma-separated render folders "
                        "(small,middle,large), each holding renders_npy/<idx:05d>.npy; one per --scene")
    p.add_argument("--video-renders", action="append", default=[],
                   help="4D LangSplat time-sensitive render folder (renders_npy/<idx:05d>.npy); one per --scene")
    p.add_argument("--targets", nargs="?", const="clip_features", default=None,
                   help="score the scene's own semantic targets instead of fields (<scene>/<FOLDER>/<key>_s.npy + "
                        "_f.npy, default clip_features; time-sensitive from <scene>/video_features): an oracle check")
    p.add_argument("--gt-oracle", action="store_true",
                   help="synthetic scenes: score fields built from gt/ (region-name and state-caption text embeddings)")
    p.add_argument("--autoencoder", default=None,
                   help="folder of the semantic FeatureAutoencoder (decodes k-dim fields to 512); default with "
                        "--fields: the copy inside the fields folder; 'none' for 512-d fields")
    p.add_argument("--video-autoencoder", default=None,
                   help="folder of the time-sensitive autoencoder (decodes the video field); default with --fields: "
                        "the copy inside the fields folder; 'none' if already full-dim")
    p.add_argument("--video-query-embeddings", default=None,
                   help="JSON {query: [floats]} or safetensors of precomputed state-query embeddings "
                        "(e.g. E5 for published fields); default: encode with the --clip text encoder")
    p.add_argument("--dataset", choices=("hypernerf", "neu3d"), default="hypernerf",
                   help="frame naming: HyperNeRF (file prefix - 1) or Neu3D (prefix as is)")
    p.add_argument("--no-time-sensitive", action="store_true", help="skip the time-sensitive evaluation")
    p.add_argument("--threshold", type=float, default=MASK_THRESHOLD, help="mask threshold on the [-1,1]-clipped map")
    add_device_arg(p)
    p.add_argument("--overlays", action="store_true", help="also write PNG overlays under <out>/overlays/<scene>/")
    p.add_argument("--out", required=True, help="output folder for results.json and results.md")
    from eval.query.text import add_text_encoder_args

    add_text_encoder_args(p)
    add_logging_args(p, log_level=True)
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    setup_logging_from(args)
    n = len(args.scene)
    modes = [bool(args.fields), bool(args.renders), args.targets is not None, args.gt_oracle]
    if sum(modes) != 1:
        raise UserError("choose one field source", None, "pass one of --fields, --renders, --targets, --gt-oracle")
    if (args.fields and len(args.fields) != n) or (args.renders and len(args.renders) != n):
        raise UserError(f"{n} scenes but {len(args.fields or args.renders)} field folders", None,
                        "give exactly one --fields (or one --renders) per --scene")
    if args.video_renders and len(args.video_renders) != n:
        raise UserError(f"{n} scenes but {len(args.video_renders)} --video-renders", None,
                        "give one --video-renders per --scene")
    from eval.query.text import text_encoder_from_args

    # everything that can be checked cheaply is checked before any model is loaded or any score computed
    coco, video_ann = [], []
    for scene in args.scene:
        require_path(scene, "scene folder", "pass a scene folder holding annotations/", kind="dir")
        coco.append(load_coco_masks(scene, args.dataset))
        vpath = Path(scene) / VIDEO_RELPATH
        video_ann.append(load_video_annotations(scene) if vpath.is_file() else None)
        if not coco[-1].frame_indices:
            raise AnnotationError("no annotated image", Path(scene) / COCO_RELPATH, "check the annotation export")
    for f in args.fields:
        require_path(f, "fields folder", "pass the inference output folder (<out> holding fields/)", kind="dir")
    sources: list[FieldSource | None] = []
    for i, scene in enumerate(args.scene):
        if args.fields:
            sources.append(OurFields(args.fields[i], dataset=args.dataset))
        elif args.renders:
            dirs = args.renders[i].split(",")
            sources.append(RendersNpyFields(dirs, args.video_renders[i] if args.video_renders else None))
        elif args.targets is not None:
            sources.append(TargetFields(scene, features=args.targets, dataset=args.dataset))
        else:
            sources.append(None)  # GroundTruthFields needs the text encoder
    vq = load_query_embeddings(args.video_query_embeddings) if args.video_query_embeddings else None
    dev = resolve_device(args.device)
    ae, vae = args.autoencoder, args.video_autoencoder
    if args.fields and len(args.fields) == 1:  # default: the copies inside the fields folder (self-contained)
        from inference.outputs import VIDEO_AUTOENCODER_DIR, OutputLayout

        layout = OutputLayout(args.fields[0])
        ae = ae if ae is not None else layout.autoencoder()
        vae = vae if vae is not None else layout.autoencoder(VIDEO_AUTOENCODER_DIR)
    decode = autoencoder_decoder(ae, dev) if ae and str(ae) != "none" else None
    vdecode = autoencoder_decoder(vae, dev) if vae and str(vae) != "none" else None
    encode_text = text_encoder_from_args(args, device=str(dev), decoders=[decode, vdecode])
    if args.overlays:  # temporary PNGs a killed earlier run left (the folder is written by this command only)
        for stale in (Path(args.out) / "overlays").rglob(".*.png.*.tmp"):
            stale.unlink(missing_ok=True)
    results = []
    for i, scene in enumerate(args.scene):
        src = sources[i] if sources[i] is not None else GroundTruthFields(scene, encode_text)
        check_frames(coco[i], src, Path(scene), args.dataset)
        name = Path(scene).name
        results.append(evaluate_scene(
            scene, src, encode_text, decode=decode, video_decode=vdecode, video_query_embeddings=vq,
            coco=coco[i], video_annotations=video_ann[i],
            dataset=args.dataset, time_sensitive=False if args.no_time_sensitive else None, device=dev,
            overlays_dir=Path(args.out) / "overlays" / name if args.overlays else None, scene_name=name))
    summary = summarize(results)
    js, md = write_results(summary, args.out)
    ov = summary["overall"]
    print(f"mIoU {100 * ov['miou']:.2f}  mAcc {100 * ov['macc']:.2f}  Acc {100 * ov['acc']:.2f}  "
          f"vIoU {100 * ov['viou']:.2f}  -> {js}, {md}")
    return summary


if __name__ == "__main__":
    main()
