"""Readers for the 4D LangSplat evaluation annotations.

* ``annotations/train/_annotations.coco.json``: a Roboflow COCO export of polygons. Only
  ``segmentation[0]`` of each annotation is rasterised (``cv2.fillPoly``); annotations of the same
  category in one image are OR-ed. The frame index comes from the file-name prefix:
  ``int(file_name.split('_')[0]) - 1`` for HyperNeRF (``000001.png`` is frame 0), no ``-1`` for Neu3D
  (``0000.png`` is frame 0).
* ``annotations/video_annotations.json``: ``{object: {state_query: [[l, r], ...]}}`` with inclusive,
  0-based frame intervals.

Bad input is refused with one :class:`AnnotationError` naming the file (and the annotation): malformed JSON, a
missing field, a polygon with an odd number of coordinates, an interval with ``l > r``. Annotations that cannot
give a mask but do not make the file unreadable are *skipped and counted* (``CocoFrames.skipped``, logged as a
warning and listed in the evaluation report): a polygon with fewer than 3 points, an annotation without polygon
segmentation, an annotation of an unknown image id. A skipped annotation adds nothing to its frame's ground truth;
a category whose only annotation in a frame is skipped is not scored on that frame (it used to be scored against
an empty mask without a word).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from utils.cli import UserError

logger = logging.getLogger(__name__)


class AnnotationError(UserError, ValueError):
    """An annotation file that cannot be read as the protocol needs it (the message names the file)."""


class AnnotationMissingError(UserError, FileNotFoundError):
    """An annotation file that is not there."""

DATASETS = ("hypernerf", "neu3d")
COCO_RELPATH = Path("annotations") / "train" / "_annotations.coco.json"
VIDEO_RELPATH = Path("annotations") / "video_annotations.json"

Intervals = list[tuple[int, int]]


def frame_index_from_file_name(file_name: str, dataset: str = "hypernerf") -> int:
    """0-based frame index of a COCO image ``file_name`` (e.g. ``000003_png.rf.x.jpg`` -> 2 for HyperNeRF)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    stem = Path(file_name).name.split("_")[0].split(".")[0]
    try:
        num = int(stem)
    except ValueError:
        raise ValueError(
            f"COCO image file_name {file_name!r} does not start with a frame number (expected e.g. "
            "'000003_png.rf....jpg'); rename the images or fix the annotation export"
        ) from None
    return num - 1 if dataset == "hypernerf" else num


def key_to_index(key: str, dataset: str = "hypernerf") -> int:
    """Frame key (file stem) -> 0-based index: trailing digits, minus 1 for HyperNeRF's 1-based names."""
    m = re.search(r"(\d+)$", key)
    if m is None:
        raise ValueError(f"cannot read a frame number from key {key!r}; write 'frame_index' into the field metadata")
    n = int(m.group(1))
    return n - 1 if dataset == "hypernerf" else n


@dataclass
class CocoFrames:
    """Ground-truth masks per frame.

    ``masks[frame_index][category] -> bool (H, W)``; ``sizes[frame_index] = (H, W)``;
    ``file_names[frame_index]`` the COCO image name; ``categories`` every category name (file order).
    """

    masks: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)
    file_names: dict[int, str] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)
    path: Path | None = None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    """Annotations left out, each ``{"annotation", "image", "frame", "category", "reason"}`` (see module doc)."""

    @property
    def frame_indices(self) -> list[int]:
        """Sorted 0-based indices of the annotated frames."""
        return sorted(self.masks)

    @property
    def image_order(self) -> list[int]:
        """The same indices in the COCO ``images`` order (insertion order of ``masks``): the published loop order."""
        return list(self.masks)


def polygon_to_mask(polygon: list[float], height: int, width: int) -> np.ndarray:
    """Rasterise one flat COCO polygon ``[x0, y0, x1, y1, ...]`` into a bool (H, W) mask.

    Vertices are truncated to integers before ``cv2.fillPoly``, as the published ``polygon_to_mask`` does
    (``np.asarray(points, dtype=np.int32)``); rounding instead would shift every mask by up to half a pixel.
    """
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    mask = np.zeros((height, width), dtype=np.uint8)
    if len(pts) >= 3:
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    return mask.astype(bool)


def _read_annotation_json(path: str | Path, relpath: Path, what: str) -> tuple[Path, Any]:
    """``path`` is the JSON file or a scene folder holding it at ``relpath``: returns (file path, parsed JSON)."""
    path = Path(path)
    if path.is_dir():
        path = path / relpath
    if not path.is_file():
        raise AnnotationMissingError(f"{what} not found", path,
                                     f"pass a scene folder holding <scene>/{relpath.as_posix()}")
    try:
        return path, json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{what}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})", path,
                              "fix or re-export the file") from None
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{what}: not a text file ({e.reason})", path, "pass the exported JSON file") from None


def _flat_polygon(poly: Any, path: Path, ann_id: Any) -> np.ndarray:
    """``segmentation[0]`` as float64 (P, 2) vertices; an odd or non-numeric coordinate list is an error."""
    try:
        flat = np.asarray(poly, dtype=np.float64)
    except (TypeError, ValueError):
        flat = None
    if flat is None or flat.ndim != 1 or not np.isfinite(flat).all():
        raise AnnotationError(f"annotation {ann_id}: segmentation[0] is not a flat list of numbers", path,
                              "fix or re-export the annotation")
    if flat.size % 2:
        raise AnnotationError(f"annotation {ann_id}: polygon with an odd number of coordinates ({flat.size})", path,
                              "every vertex needs an x and a y; fix or re-export the annotation")
    return flat.reshape(-1, 2)


def load_coco_masks(path: str | Path, dataset: str = "hypernerf") -> CocoFrames:
    """Read a COCO polygon file into per-frame category masks (see module doc for the conventions).

    ``path`` may be the JSON file itself or a scene folder containing ``annotations/train/_annotations.coco.json``.
    Images without annotations are kept with an empty category dict.
    """
    path, data = _read_annotation_json(path, COCO_RELPATH, "COCO annotations")
    try:
        return _parse_coco(data, path, dataset)
    except UserError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        what = f"missing field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise AnnotationError(f"not a COCO annotation file as expected ({what})", path,
                              "fix or re-export the file (Roboflow COCO export)") from None


def _parse_coco(data: Any, path: Path, dataset: str) -> CocoFrames:
    if not isinstance(data, dict):
        raise AnnotationError("not a COCO annotation file (the top level is not an object)", path,
                              "pass the exported _annotations.coco.json")
    cats = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    out = CocoFrames(categories=list(dict.fromkeys(cats.values())), path=path)
    image_index: dict[int, int] = {}
    for img in data.get("images", []):
        try:
            idx = frame_index_from_file_name(str(img["file_name"]), dataset)
        except ValueError as e:
            raise AnnotationError(str(e).split(";")[0], path, "rename the images or fix the annotation export"
                                  ) from None
        if idx in out.masks:
            raise AnnotationError(f"two images map to frame index {idx} ({out.file_names[idx]!r}, "
                                  f"{img['file_name']!r})", path, "check the dataset flag (hypernerf vs neu3d)")
        h, w = int(img["height"]), int(img["width"])
        if h <= 0 or w <= 0:
            raise AnnotationError(f"image {img['file_name']!r} has size {w}x{h}", path, "fix the image entry")
        image_index[int(img["id"])] = idx
        out.masks[idx] = {}
        out.sizes[idx] = (h, w)
        out.file_names[idx] = str(img["file_name"])

    def skip(ann: dict, reason: str, idx: int | None = None, name: str | None = None) -> None:
        out.skipped.append({"annotation": ann.get("id"), "image": out.file_names.get(idx) if idx is not None
                            else None, "frame": idx, "category": name, "reason": reason})
        logger.warning("%s: annotation %s skipped: %s", path, ann.get("id"), reason)

    for ann in data.get("annotations", []):
        img_id = int(ann["image_id"])
        name = cats.get(int(ann["category_id"]), str(ann["category_id"]))
        if img_id not in image_index:
            skip(ann, f"refers to unknown image id {img_id}", None, name)
            continue
        idx = image_index[img_id]
        seg = ann.get("segmentation")
        if not isinstance(seg, list) or not seg or not isinstance(seg[0], list):
            skip(ann, "no polygon segmentation", idx, name)
            continue
        pts = _flat_polygon(seg[0], path, ann.get("id"))
        if len(pts) < 3:
            skip(ann, f"polygon with {len(pts)} point(s), fewer than 3", idx, name)
            continue
        h, w = out.sizes[idx]
        mask = polygon_to_mask(seg[0], h, w)
        prev = out.masks[idx].get(name)
        out.masks[idx][name] = mask if prev is None else (prev | mask)
    return out


def load_video_annotations(path: str | Path) -> dict[str, dict[str, Intervals]]:
    """Read ``video_annotations.json`` -> ``{object: {state_query: [(l, r), ...]}}`` (inclusive, 0-based).

    ``path`` may be the JSON file or a scene folder containing ``annotations/video_annotations.json``.
    """
    path, data = _read_annotation_json(path, VIDEO_RELPATH, "video annotations")
    shape = "{object: {state_query: [[l, r], ...]}}"
    if not isinstance(data, dict):
        raise AnnotationError(f"video annotations: expected {shape}", path, "fix the file")
    out: dict[str, dict[str, Intervals]] = {}
    for obj, states in data.items():
        if not isinstance(states, dict):
            raise AnnotationError(f"entry {obj!r} must map state queries to interval lists", path,
                                  f"write it as {shape}")
        out[str(obj)] = {}
        for query, intervals in states.items():
            if not isinstance(intervals, list):
                raise AnnotationError(f"{obj!r}/{query!r}: intervals must be a list of [l, r]", path,
                                      f"write it as {shape}")
            ivs: Intervals = []
            for iv in intervals:
                ok = (isinstance(iv, list) and len(iv) == 2
                      and all(isinstance(v, int) and not isinstance(v, bool) for v in iv))
                if not ok:
                    raise AnnotationError(f"bad interval {iv!r} for {obj!r}/{query!r} (not two integer frame "
                                          "indices)", path, "use [l, r] with 0-based inclusive frame indices")
                if iv[0] > iv[1]:
                    raise AnnotationError(f"bad interval {iv!r} for {obj!r}/{query!r}: it ends before it starts",
                                          path, "use [l, r] with l <= r")
                ivs.append((int(iv[0]), int(iv[1])))
            out[str(obj)][str(query)] = ivs
    return out


def in_intervals(index: int, intervals: Intervals) -> bool:
    """True if ``index`` lies in one of the inclusive ``[l, r]`` intervals."""
    return any(lo <= index <= hi for lo, hi in intervals)
