"""Masked square crops of regions, as the 4D LangSplat CLIP preprocessing makes them.

Per region: pixels outside the mask set to black, crop to the box ``[x_min, x_max) x [y_min, y_max)`` (the
published code's box excludes the last row and column), zero-pad to a centred square, resize to S x S
with ``cv2.resize`` (bilinear). Regions whose box has zero width or height are dropped.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage


def pad_to_square(img: np.ndarray) -> np.ndarray:
    """Zero-pad an (h, w, 3) image to a centred (L, L, 3) square, L = max(h, w)."""
    h, w = img.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side, img.shape[2]), dtype=img.dtype)
    top, left = (side - h) // 2, (side - w) // 2
    out[top:top + h, left:left + w] = img
    return out


def region_crops(image: np.ndarray, level_map: np.ndarray, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Crops of every region of a compact level map.

    Args:
        image: uint8 (H, W, 3) RGB.
        level_map: int (H, W), regions 0..n-1, -1 none.
        size: output side S (the CLIP image size).
    Returns:
        (kept region indices int64 (m,), uint8 crops (m, S, S, 3)); regions with a degenerate box are left out.
    """
    if image.shape[:2] != level_map.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {level_map.shape} sizes differ")
    n = int(level_map.max()) + 1 if level_map.size and level_map.max() >= 0 else 0
    # find_objects labels from 1; -1 -> 0 (ignored)
    boxes = ndimage.find_objects(level_map + 1, max_label=n) if n else []
    kept, crops = [], []
    for j, box in enumerate(boxes):
        if box is None:
            continue
        ys, xs = box
        h, w = ys.stop - 1 - ys.start, xs.stop - 1 - xs.start
        if h == 0 or w == 0:
            continue
        sub = (slice(ys.start, ys.start + h), slice(xs.start, xs.start + w))
        crop = image[sub].copy()
        crop[level_map[sub] != j] = 0
        crops.append(cv2.resize(pad_to_square(crop), (size, size)))
        kept.append(j)
    if not crops:
        return np.zeros(0, np.int64), np.zeros((0, size, size, 3), np.uint8)
    return np.asarray(kept, np.int64), np.stack(crops)
