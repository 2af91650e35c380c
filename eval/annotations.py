"""Readers for the 4D LangSplat evaluation annotations.

* ``annotations/train/_annotations.coco.json``: a Roboflow COCO export of polygons. Only
  ``segmentation[0]`` of each annotation is rasterised (``cv2.fillPoly``); annotations of the same
  category in one image are OR-ed. The frame index comes from the file-name prefix:
  ``int(file_name.split('_')[0]) - 1`` for HyperNeRF (``000001.png`` is frame 0), no ``-1`` for Neu3D
  (``0000.png`` is frame 0).
* ``annotations/video_annotations.json``: ``{object: {state_query: [[l, r], ...]}}`` with inclusive,
  0-based frame intervals.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

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
        raise FileNotFoundError(f"{what} not found: {path} (expected <scene>/{relpath})")
    return path, json.loads(path.read_text())


def load_coco_masks(path: str | Path, dataset: str = "hypernerf") -> CocoFrames:
    """Read a COCO polygon file into per-frame category masks (see module doc for the conventions).

    ``path`` may be the JSON file itself or a scene folder containing ``annotations/train/_annotations.coco.json``.
    Images without annotations are kept with an empty category dict.
    """
    path, data = _read_annotation_json(path, COCO_RELPATH, "COCO annotations")
    cats = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    out = CocoFrames(categories=list(dict.fromkeys(cats.values())))
    image_index: dict[int, int] = {}
    for img in data.get("images", []):
        idx = frame_index_from_file_name(str(img["file_name"]), dataset)
        if idx in out.masks:
            raise ValueError(f"{path}: two images map to frame index {idx} ({out.file_names[idx]!r}, "
                             f"{img['file_name']!r}); check the dataset flag (hypernerf vs neu3d)")
        image_index[int(img["id"])] = idx
        out.masks[idx] = {}
        out.sizes[idx] = (int(img["height"]), int(img["width"]))
        out.file_names[idx] = str(img["file_name"])
    for ann in data.get("annotations", []):
        img_id = int(ann["image_id"])
        if img_id not in image_index:
            logger.warning("%s: annotation %s refers to unknown image id %s; skipped", path, ann.get("id"), img_id)
            continue
        seg = ann.get("segmentation")
        if not isinstance(seg, list) or not seg or not isinstance(seg[0], list):
            logger.warning("%s: annotation %s has no polygon segmentation; skipped", path, ann.get("id"))
            continue
        idx = image_index[img_id]
        h, w = out.sizes[idx]
        name = cats.get(int(ann["category_id"]), str(ann["category_id"]))
        mask = polygon_to_mask(seg[0], h, w)
        prev = out.masks[idx].get(name)
        out.masks[idx][name] = mask if prev is None else (prev | mask)
    return out


def load_video_annotations(path: str | Path) -> dict[str, dict[str, Intervals]]:
    """Read ``video_annotations.json`` -> ``{object: {state_query: [(l, r), ...]}}`` (inclusive, 0-based).

    ``path`` may be the JSON file or a scene folder containing ``annotations/video_annotations.json``.
    """
    path, data = _read_annotation_json(path, VIDEO_RELPATH, "video annotations")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected {{object: {{state_query: [[l, r], ...]}}}}")
    out: dict[str, dict[str, Intervals]] = {}
    for obj, states in data.items():
        if not isinstance(states, dict):
            raise ValueError(f"{path}: entry {obj!r} must map state queries to interval lists")
        out[str(obj)] = {}
        for query, intervals in states.items():
            ivs: Intervals = []
            for iv in intervals:
                if len(iv) != 2 or int(iv[0]) > int(iv[1]):
                    raise ValueError(f"{path}: bad interval {iv!r} for {obj!r}/{query!r}; use [l, r] with l <= r")
                ivs.append((int(iv[0]), int(iv[1])))
            out[str(obj)][str(query)] = ivs
    return out


def in_intervals(index: int, intervals: Intervals) -> bool:
    """True if ``index`` lies in one of the inclusive ``[l, r]`` intervals."""
    return any(lo <= index <= hi for lo, hi in intervals)
