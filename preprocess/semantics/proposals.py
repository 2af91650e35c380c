"""Region proposals at three granularities (small, middle, large) for real videos.

- ``SkimageProposer``: no downloadable weights; Felzenszwalb graph segmentation at three scales.
- ``SamProposer``: Segment Anything (if ``segment_anything`` is installed and a checkpoint is given). A grid of
  point prompts with SAM's 3-way multimask output: mask index 0/1/2 = small/middle/large, as in the
  4D LangSplat (DEVA) pipeline; low-IoU masks dropped, duplicates suppressed, smaller masks win overlaps.
- ``PrecomputedProposer``: existing ``<key>_s.npy`` files (4, H, W) (default|small|middle|large) or (3, H, W).

Every proposer returns a list of level maps, int64 (H, W) with -1 for "no region": four maps
(default, small, middle, large) or three (small, middle, large; the caller pools the default level).
Proposals are per frame: unlike DEVA, regions are not tracked over time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from preprocess.semantics.scene import SemanticsInputError
from preprocess.target_format import seg_path
from utils.io import load_npy

logger = logging.getLogger(__name__)


def _drop_small(seg: np.ndarray, min_area: int, max_regions: int) -> np.ndarray:
    ids, counts = np.unique(seg[seg >= 0], return_counts=True)
    keep = ids[counts >= min_area]
    if keep.size > max_regions:
        keep = ids[np.argsort(-counts)[:max_regions]]
    out = np.where(np.isin(seg, keep), seg, -1)
    return out.astype(np.int64)


class SkimageProposer:
    """Felzenszwalb segmentation at three scales; ``scales``/``min_fracs`` are small -> large.

    ``min_fracs`` is the minimum region area as a fraction of the image; at most ``max_regions`` regions per
    level are kept (the largest). Pixels of dropped regions get -1.
    """

    def __init__(self, scales: tuple[float, float, float] = (100.0, 400.0, 1600.0),
                 min_fracs: tuple[float, float, float] = (0.002, 0.01, 0.04), sigma: float = 0.8,
                 max_regions: int = 128) -> None:
        self.scales, self.min_fracs, self.sigma, self.max_regions = scales, min_fracs, sigma, max_regions

    def __call__(self, image: np.ndarray, key: str = "") -> list[np.ndarray]:
        from skimage.segmentation import felzenszwalb

        area = image.shape[0] * image.shape[1]
        out = []
        for scale, frac in zip(self.scales, self.min_fracs, strict=True):
            min_size = max(4, int(frac * area))
            seg = felzenszwalb(image, scale=scale, sigma=self.sigma, min_size=min_size)
            out.append(_drop_small(seg.astype(np.int64), min_size // 2, self.max_regions))
        return out


def masks_to_level_map(masks: np.ndarray, scores: np.ndarray, score_thresh: float = 0.88,
                       overlap_thresh: float = 0.8, max_regions: int = 200) -> np.ndarray:
    """Binary masks (M, H, W) + quality scores (M,) -> one int64 (H, W) level map.

    Masks below ``score_thresh`` are dropped; greedily (best score first) a mask whose IoU with an already kept
    one exceeds ``overlap_thresh`` is dropped; kept masks are painted largest first so smaller masks win.
    """
    order = np.argsort(-scores)
    kept: list[np.ndarray] = []
    for i in order:
        if scores[i] < score_thresh or len(kept) >= max_regions:
            continue
        m = masks[i].astype(bool)
        a = m.sum()
        if a == 0:
            continue
        if any((m & k).sum() / max(1, (m | k).sum()) > overlap_thresh for k in kept):
            continue
        kept.append(m)
    out = np.full(masks.shape[1:], -1, np.int64)
    for idx in sorted(range(len(kept)), key=lambda j: -kept[j].sum()):
        out[kept[idx]] = idx
    return out


class SamProposer:
    """Segment Anything point-grid proposals at three granularities (needs ``segment_anything`` + checkpoint)."""

    def __init__(self, checkpoint: str | Path | None, model_type: str | None = None, device: str = "cpu",
                 points_per_side: int = 32, score_thresh: float = 0.88, overlap_thresh: float = 0.8,
                 batch: int = 64) -> None:
        try:
            from segment_anything import SamPredictor, sam_model_registry
        except ImportError as exc:
            raise SemanticsInputError("--masks sam needs the `segment_anything` package (pip install "
                                      "segment-anything) and a checkpoint; or use --masks skimage") from exc
        if checkpoint is None or not Path(checkpoint).is_file():
            raise SemanticsInputError(f"--masks sam needs --sam-checkpoint pointing to an existing file "
                                      f"(e.g. ckpt/sam/sam_vit_h_4b8939.pth), got {checkpoint}")
        name = Path(checkpoint).name
        model_type = model_type or next((t for t in ("vit_h", "vit_l", "vit_b") if t in name), "vit_h")
        import torch

        from model.safe_load import read_weights

        sam = sam_model_registry[model_type](checkpoint=None)  # the weights are read here, never unpickled
        sam.load_state_dict(read_weights(checkpoint), strict=True)
        sam = sam.to(device)
        self.predictor = SamPredictor(sam)
        self.torch, self.device = torch, device
        self.points_per_side, self.score_thresh, self.overlap_thresh, self.batch = (
            points_per_side, score_thresh, overlap_thresh, batch)

    def __call__(self, image: np.ndarray, key: str = "") -> list[np.ndarray]:
        torch = self.torch
        h, w = image.shape[:2]
        self.predictor.set_image(image)
        g = (np.arange(self.points_per_side) + 0.5) / self.points_per_side
        pts = np.stack(np.meshgrid(g * w, g * h), -1).reshape(-1, 2)
        masks, scores = [], []
        with torch.inference_mode():
            for i in range(0, len(pts), self.batch):
                p = torch.as_tensor(pts[i:i + self.batch], dtype=torch.float32, device=self.device)
                p = self.predictor.transform.apply_coords_torch(p, (h, w))[:, None, :]
                lab = torch.ones(p.shape[0], 1, dtype=torch.int64, device=self.device)
                m, s, _ = self.predictor.predict_torch(p, lab, multimask_output=True)
                masks.append(m.cpu().numpy())
                scores.append(s.float().cpu().numpy())
        m_all, s_all = np.concatenate(masks), np.concatenate(scores)  # (P, 3, H, W), (P, 3)
        return [masks_to_level_map(m_all[:, k], s_all[:, k], self.score_thresh, self.overlap_thresh)
                for k in range(3)]


class PrecomputedProposer:
    """Reads ``<masks_dir>/<key>_s.npy``: (4, H, W) default|small|middle|large or (3, H, W) small|middle|large."""

    def __init__(self, masks_dir: str | Path) -> None:
        self.dir = Path(masks_dir)
        if not self.dir.is_dir():
            raise SemanticsInputError(f"--masks-dir {self.dir} does not exist")

    def path(self, key: str) -> Path:
        return seg_path(self.dir, key)

    def __call__(self, image: np.ndarray, key: str = "") -> list[np.ndarray]:
        path = self.path(key)
        if not path.is_file():
            raise SemanticsInputError(f"precomputed mask {path} is missing for frame {key}")
        s = load_npy(path)
        h, w = image.shape[:2]
        if s.ndim != 3 or s.shape[0] not in (3, 4) or s.shape[1:] != (h, w):
            raise SemanticsInputError(f"{path} has shape {s.shape}, expected (4, {h}, {w}) or (3, {h}, {w}) to "
                                      f"match the frame")
        return [np.where(plane >= 0, np.rint(plane), -1).astype(np.int64) for plane in s]
