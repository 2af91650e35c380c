"""Annotation writers for synthetic scenes: COCO polygons, video (state) annotations and ``gt/names.json``.

Formats follow the scene layout of ``preprocess.make_synthetic`` (module docstring) and the 4D LangSplat
evaluation protocol: only ``segmentation[0]`` of an annotation is rasterised (``cv2.fillPoly``), and
same-category polygons of one image are OR-ed. A mask with holes is therefore written as one "keyhole"
polygon per connected piece: each hole's boundary is spliced into the outer boundary through a zero-width
cut, which ``cv2.fillPoly`` (even-odd scan filling) reproduces exactly.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .scene import LEVELS, TABLECLOTH, Scene


def _splice(outer: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Join ``hole`` (M, 2) into ``outer`` (N, 2) through their closest pair of vertices."""
    d = ((outer[:, None, :].astype(np.int64) - hole[None, :, :].astype(np.int64)) ** 2).sum(-1)
    i, j = np.unravel_index(int(d.argmin()), d.shape)
    return np.concatenate([outer[: i + 1], hole[j:], hole[: j + 1], outer[i:]], axis=0)


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Polygons (each int32 (N, 2), x then y, N >= 3) whose ``cv2.fillPoly`` union reproduces ``mask``.

    One polygon per 8-connected piece of the bool (H, W) ``mask``; holes are spliced in as keyholes.
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hier = hierarchy[0]
    polys = []
    for i, c in enumerate(contours):
        if hier[i][3] != -1:
            continue  # a hole: handled with its parent
        p = c[:, 0, :]
        child = hier[i][2]
        while child != -1:
            p = _splice(p, contours[child][:, 0, :])
            child = hier[child][0]
        while len(p) < 3:  # single pixels / 2-pixel lines: repeat vertices so COCO readers accept them
            p = np.concatenate([p, p[-1:]], axis=0)
        polys.append(p.astype(np.int32))
    return polys


def rasterize_polygons(polygons: list[list[float]] | list[np.ndarray], height: int, width: int) -> np.ndarray:
    """OR of ``cv2.fillPoly`` of flat COCO polygons ``[x1, y1, x2, y2, ...]`` (or (N, 2) arrays): bool (H, W)."""
    out = np.zeros((height, width), dtype=np.uint8)
    for p in polygons:
        pts = np.asarray(p, dtype=np.float64).reshape(-1, 2).round().astype(np.int32)
        cv2.fillPoly(out, [pts], 1)
    return out.astype(bool)


def coco_categories(scene: Scene) -> list[dict[str, Any]]:
    """COCO categories: the tablecloth then the objects (large-level names), ids from 1."""
    names = [TABLECLOTH] + [o.name for o in scene.objects]
    return [{"id": i + 1, "name": n, "supercategory": "synthetic"} for i, n in enumerate(names)]


def coco_image_entry(scene: Scene, image_id: int, frame: int) -> dict[str, Any]:
    """COCO image record of 0-based ``frame``; file_name "000003_png.rf.synthetic.jpg" (index = prefix - 1)."""
    return {"id": image_id, "file_name": f"{frame + 1:06d}_png.rf.synthetic.jpg",
            "height": scene.config.height, "width": scene.config.width}


def coco_annotations_for_frame(scene: Scene, labels: np.ndarray, image_id: int, first_ann_id: int,
                               ) -> list[dict[str, Any]]:
    """Annotations (one per connected piece of each category's large-level mask) for one frame.

    labels: int32 (3, H, W) ground-truth region ids (small, middle, large).
    """
    large = labels[LEVELS.index("large")]
    anns = []
    for cat in coco_categories(scene):
        rid = scene.region_id("large", cat["name"], cat["name"])
        mask = large == rid
        for poly in mask_to_polygons(mask):
            piece = np.zeros(mask.shape, dtype=np.uint8)
            cv2.fillPoly(piece, [poly], 1)
            piece &= mask.astype(np.uint8)
            x, y, bw, bh = cv2.boundingRect(poly)
            anns.append({
                "id": first_ann_id + len(anns),
                "image_id": image_id,
                "category_id": cat["id"],
                "segmentation": [[int(v) for v in poly.reshape(-1)]],
                "bbox": [int(x), int(y), int(bw), int(bh)],
                "area": int(piece.sum()),
                "iscrowd": 0,
            })
    return anns


def coco_document(scene: Scene, images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole ``_annotations.coco.json`` object (Roboflow-like layout, no timestamps: byte-stable)."""
    return {
        "info": {"description": "synthetic dynamic scene (preprocess.make_synthetic)",
                 "version": "1", "year": 2025, "contributor": "langvggt4d",
                 "date_created": "1970-01-01T00:00:00"},
        "licenses": [{"id": 1, "name": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"}],
        "categories": coco_categories(scene),
        "images": images,
        "annotations": annotations,
    }


def names_document(scene: Scene) -> dict[str, Any]:
    """``gt/names.json``: levels, regions (global ids), objects, state timeline, eval frames (+ config)."""
    intervals = scene.state_intervals()
    return {
        "levels": list(LEVELS),
        "regions": [{"id": r.id, "name": r.name, "object": r.object, "level": r.level} for r in scene.regions],
        "objects": [TABLECLOTH] + [o.name for o in scene.objects],
        "states": {obj: [{"caption": c, "intervals": iv} for c, iv in caps.items()]
                   for obj, caps in intervals.items()},
        "eval_frames": scene.eval_frames,
        "frame_keys": scene.frame_keys,
        "config": scene.config.to_dict(),
    }
