"""Tiny synthetic scenes in the interfaces.md layout (frames + gt/names.json + gt/labels), for semantics tests.

``synthetic_scene`` uses ``preprocess.make_synthetic`` (8 frames, 64x48) when it exists, else ``make_scene``.
``make_scene`` draws rectangles with known content. Regions: 0 "table" (large), 1 "cup" (middle + large), 2 "cup handle" (small), 3 "cup body" (small),
4 "red ball" (small + middle + large, moves right over time).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

try:
    from preprocess import make_synthetic
except ImportError:  # the generator is written in parallel; fall back to the rectangle scene
    make_synthetic = None

REGIONS = [
    {"id": 0, "name": "table", "object": "table", "level": "large"},
    {"id": 1, "name": "cup", "object": "cup", "level": "middle"},
    {"id": 2, "name": "cup handle", "object": "cup", "level": "small"},
    {"id": 3, "name": "cup body", "object": "cup", "level": "small"},
    {"id": 4, "name": "red ball", "object": "red ball", "level": "small"},
]
COLORS = {0: (150, 110, 60), 2: (30, 30, 200), 3: (200, 200, 240), 4: (230, 20, 20)}


def make_scene(root: str | Path, frames: int = 4, height: int = 48, width: int = 64) -> Path:
    """Write the fixture scene under ``root`` and return its path."""
    scene = Path(root)
    (scene / "rgb" / "2x").mkdir(parents=True, exist_ok=True)
    (scene / "gt" / "labels").mkdir(parents=True, exist_ok=True)
    half = frames // 2
    names = {
        "levels": ["small", "middle", "large"],
        "regions": REGIONS,
        "objects": ["table", "cup", "red ball"],
        "states": {"cup": [{"caption": "empty cup", "intervals": [[0, half - 1]]},
                           {"caption": "full cup", "intervals": [[half, frames - 1]]}]},
        "eval_frames": list(range(1, frames, 2)),
    }
    (scene / "gt" / "names.json").write_text(json.dumps(names))
    h, w = height, width
    for t in range(frames):
        lab = np.full((3, h, w), -1, np.int32)
        img = np.full((h, w, 3), 90, np.uint8)
        lab[2, h // 2:, :] = 0  # table, bottom half (large only)
        # cup: body + handle (small), whole cup (middle, large)
        body = (slice(h // 4, 3 * h // 4), slice(w // 8, w // 8 + w // 5))
        handle = (slice(h // 3, h // 2), slice(w // 8 + w // 5, w // 8 + w // 5 + 4))
        for lvl in (1, 2):
            lab[lvl][body] = 1
            lab[lvl][handle] = 1
        lab[0][body] = 3
        lab[0][handle] = 2
        # red ball: a square moving right
        x0 = w // 2 + 2 * t
        ball = (slice(h // 2 - 6, h // 2 + 4), slice(x0, x0 + 10))
        lab[:, ball[0], ball[1]] = 4
        for lvl in (2, 1, 0):
            for rid, col in COLORS.items():
                img[lab[lvl] == rid] = col
        key = f"{t + 1:06d}"
        cv2.imwrite(str(scene / "rgb" / "2x" / f"{key}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        np.save(scene / "gt" / "labels" / f"{key}.npy", lab)
    return scene


def synthetic_scene(root: str | Path, frames: int = 8, height: int = 48, width: int = 64) -> Path:
    """A scene from ``preprocess.make_synthetic`` (small config) when available, else :func:`make_scene`."""
    if make_synthetic is None:
        return make_scene(root, frames=frames, height=height, width=width)
    out = Path(root)
    code = make_synthetic.main(["--out", str(out), "--frames", str(frames), "--width", str(width),
                                "--height", str(height), "--no-progress"])
    assert code == 0 and (out / "gt" / "names.json").is_file()
    return out
