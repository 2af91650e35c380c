"""A tiny hand-built HyperNeRF-layout scene for evaluator tests (rectangles, COCO polygons, video annotations).

The text encoder is a bag of words over an orthogonal vocabulary: ``"empty glass cup"`` = (e_empty + e_glass +
e_cup) / sqrt(3), so names that share no word are exactly orthogonal (and orthogonal to the negatives).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.levels import LEVELS
from utils.io import save_json_atomic, save_npy_atomic, save_safetensors_atomic

H, W, T = 128, 160, 6


class VocabEncoder:
    """Bag-of-words text encoder with one orthogonal axis per word (dim = vocabulary size)."""

    def __init__(self, dim: int = 20) -> None:
        self.dim = dim
        self.vocab: dict[str, int] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                if w not in self.vocab:
                    self.vocab[w] = len(self.vocab)
                out[i, self.vocab[w]] += 1.0
        return F.normalize(out, dim=-1)


def boxes(t: int) -> dict[str, tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) inclusive rectangles of each object at frame t (the cup moves right)."""
    return {
        "wooden board": (4, 72, 155, 122),
        "metal spoon": (92, 78, 147, 115),
        "red apple": (8, 8, 55, 55),
        "glass cup": (64 + 2 * t, 8, 107 + 2 * t, 59),
    }


# which objects exist at which level
LEVEL_OBJECTS = {"small": ["metal spoon", "red apple"], "middle": ["red apple", "glass cup"],
                 "large": ["wooden board", "glass cup", "red apple"]}
STATES = {"glass cup": {"empty glass cup": [[0, 2]], "full glass cup": [[3, 5]]}}


def caption(t: int) -> str:
    return "empty glass cup" if t <= 2 else "full glass cup"


def level_labels(t: int) -> dict[str, np.ndarray]:
    """Per level an object-name map (H, W) of str ('' = none); later objects paint over earlier ones."""
    out = {}
    for lv in LEVELS:
        lab = np.full((H, W), "", dtype=object)
        for name in LEVEL_OBJECTS[lv]:
            x0, y0, x1, y1 = boxes(t)[name]
            lab[y0:y1 + 1, x0:x1 + 1] = name
        out[lv] = lab
    return out


def oracle_fields(t: int, enc: VocabEncoder) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, H, W, D) semantic field = name embedding per pixel; (H, W, D) video field = caption embedding on the cup."""
    names = list(boxes(t))
    emb = dict(zip(names, enc(names), strict=True))
    sem = torch.zeros(len(LEVELS), H, W, enc.dim)
    for li, lab in enumerate(level_labels(t).values()):
        for name in names:
            sem[li][torch.from_numpy(lab == name)] = emb[name]
    vid = torch.zeros(H, W, enc.dim)
    x0, y0, x1, y1 = boxes(t)["glass cup"]
    vid[y0:y1 + 1, x0:x1 + 1] = enc([caption(t)])[0]
    return sem, vid


def write_scene(root: Path, skip: dict[int, list[str]] | None = None) -> Path:
    """Write annotations (COCO + video) for all T frames; ``skip[t]`` lists objects not annotated in frame t."""
    skip = skip or {}
    scene = root / "toy"
    names = list(boxes(0))
    cats = [{"id": i + 1, "name": n, "supercategory": "obj"} for i, n in enumerate(names)]
    images, anns = [], []
    for t in range(T):
        images.append({"id": t, "file_name": f"{t + 1:06d}_png.rf.abc{t}.jpg", "height": H, "width": W})
        for ci, n in enumerate(names):
            if n in skip.get(t, []):
                continue
            x0, y0, x1, y1 = boxes(t)[n]
            poly = [x0, y0, x1, y0, x1, y1, x0, y1]
            anns.append({"id": len(anns), "image_id": t, "category_id": ci + 1, "segmentation": [poly],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    save_json_atomic({"images": images, "annotations": anns, "categories": cats},
                     scene / "annotations" / "train" / "_annotations.coco.json")
    save_json_atomic(STATES, scene / "annotations" / "video_annotations.json")
    return scene


def write_our_fields(out: Path, enc: VocabEncoder, video: bool = True) -> Path:
    """``<out>/fields/<key>.safetensors`` with (D, H, W) level tensors (+ video)."""
    for t in range(T):
        sem, vid = oracle_fields(t, enc)
        tensors = {lv: sem[li].permute(2, 0, 1).contiguous() for li, lv in enumerate(LEVELS)}
        if video:
            tensors["video"] = vid.permute(2, 0, 1).contiguous()
        save_safetensors_atomic(tensors, out / "fields" / f"{t + 1:06d}.safetensors",
                                metadata={"frame_key": f"{t + 1:06d}", "frame_index": str(t),
                                          "lang_dim": str(enc.dim)})
    return out


def write_renders(root: Path, enc: VocabEncoder) -> tuple[list[Path], Path]:
    """4D LangSplat layout ``<root>/<level>/renders_npy/<idx:05d>.npy`` with features mapped to (x + 1) / 2."""
    dirs = [root / f"toy_{i + 1}" for i in range(3)]
    vdir = root / "toy_video"
    for t in range(T):
        sem, vid = oracle_fields(t, enc)
        for li, d in enumerate(dirs):
            save_npy_atomic(((sem[li] + 1) / 2).numpy().astype(np.float32), d / "renders_npy" / f"{t:05d}.npy")
        save_npy_atomic(vid.numpy().astype(np.float32), vdir / "renders_npy" / f"{t:05d}.npy")
    return dirs, vdir


def load_json(p: Path) -> dict:
    return json.loads(Path(p).read_text())
