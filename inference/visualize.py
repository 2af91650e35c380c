"""Pictures: PCA colouring of feature maps, heatmaps, overlays, atomic PNG writes and mp4 writing."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from utils.io import CloseOnSuccess, atomic_path

log = logging.getLogger(__name__)


class PCAProjector:
    """Project (C, H, W) feature maps to RGB with a PCA fitted once and reused for every frame.

    Fitting once (on the first frame) keeps the colours consistent across a video. The colour range
    of each component is fixed from the 1st/99th percentiles of the fitting data.
    """

    def __init__(self, mean: np.ndarray, components: np.ndarray, lo: np.ndarray, hi: np.ndarray):
        self.mean, self.components, self.lo, self.hi = mean, components, lo, hi

    @classmethod
    def fit(cls, features: np.ndarray | torch.Tensor, max_samples: int = 20000, seed: int = 0) -> PCAProjector:
        """Fit on (C, H, W) features (or (N, C) rows)."""
        x = _rows(features)
        if x.shape[0] > max_samples:
            x = x[np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False)]
        mean = x.mean(axis=0)
        xc = x - mean
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        comps = np.zeros((3, x.shape[1]))
        k = min(3, vt.shape[0])
        comps[:k] = vt[:k]
        # deterministic sign: the largest-magnitude loading of each component is positive
        for i in range(k):
            if comps[i, np.argmax(np.abs(comps[i]))] < 0:
                comps[i] = -comps[i]
        proj = xc @ comps.T
        lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
        return cls(mean, comps, lo, np.maximum(hi, lo + 1e-8))

    def __call__(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """(C, H, W) -> (H, W, 3) uint8."""
        c, h, w = features.shape
        proj = (_rows(features) - self.mean) @ self.components.T
        img = np.clip((proj - self.lo) / (self.hi - self.lo), 0.0, 1.0)
        return (img.reshape(h, w, 3) * 255).round().astype(np.uint8)

    def to_dict(self) -> dict:
        return {k: np.asarray(getattr(self, k)).tolist() for k in ("mean", "components", "lo", "hi")}

    @classmethod
    def from_dict(cls, d: dict) -> PCAProjector:
        return cls(*(np.asarray(d[k], dtype=np.float64) for k in ("mean", "components", "lo", "hi")))


def _rows(features: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().float().cpu().numpy()
    f = np.asarray(features, dtype=np.float64)
    if f.ndim == 3:
        return f.reshape(f.shape[0], -1).T
    return f.reshape(-1, f.shape[-1])


def to_uint8_image(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """(3, H, W) or (H, W, 3) float in [0, 1] (or uint8) -> (H, W, 3) uint8."""
    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu().numpy()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    if img.dtype == np.uint8:
        return img
    return (np.clip(img, 0.0, 1.0) * 255).round().astype(np.uint8)


def heatmap_rgb(values: np.ndarray, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """(H, W) scalar map -> (H, W, 3) uint8 turbo colours (values clipped to [vmin, vmax])."""
    v = np.clip((np.asarray(values, dtype=np.float32) - vmin) / max(vmax - vmin, 1e-8), 0, 1)
    bgr = cv2.applyColorMap((v * 255).round().astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def depth_picture(depth: np.ndarray, conf: np.ndarray | None = None) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8: inverse depth in turbo colours (near = warm), scaled to the 2-98 %
    range of the pixels with finite positive depth (and, when given, above-median confidence)."""
    depth = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(depth) & (depth > 0)
    if conf is not None:
        c = np.asarray(conf, dtype=np.float64)
        if ok.any():
            ok &= c >= np.median(c[ok])
    inv = np.zeros_like(depth)
    inv[np.isfinite(depth) & (depth > 0)] = 1.0 / depth[np.isfinite(depth) & (depth > 0)]
    if not ok.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    lo, hi = np.percentile(inv[ok], [2, 98])
    return heatmap_rgb((inv - lo) / max(hi - lo, 1e-12))


def overlay(rgb: np.ndarray, heat: np.ndarray | None = None, mask: np.ndarray | None = None,
            alpha: float = 0.5, mask_color: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """Blend a heatmap (H, W) in [0, 1] over an (H, W, 3) uint8 image and outline a bool mask.

    The heatmap is blended with weight ``alpha * heat`` so irrelevant regions keep the photo; the
    mask gets a tinted fill and a 2-px contour.
    """
    out = np.asarray(rgb, dtype=np.float32).copy()
    if heat is not None:
        h = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)[..., None]
        out = out * (1 - alpha * h) + heatmap_rgb(h[..., 0]).astype(np.float32) * (alpha * h)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        out[m] = 0.7 * out[m] + 0.3 * np.asarray(mask_color, dtype=np.float32)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        out_u8 = np.ascontiguousarray(out.round().clip(0, 255).astype(np.uint8))
        cv2.drawContours(out_u8, contours, -1, mask_color, 2)
        return out_u8
    return out.round().clip(0, 255).astype(np.uint8)


def annotate(image: np.ndarray, title: str, colorbar: bool = True, legend: str | None = None) -> np.ndarray:
    """Label a picture so it reads without its file name: ``title`` (e.g. the query text and the chosen level) in
    a dark box at the top left, an optional turbo colour bar (0 at the bottom, 1 at the top) along the right edge,
    and an optional ``legend`` line at the bottom left. Same size as ``image`` (H, W, 3) uint8."""
    out = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).copy())
    H, W = out.shape[:2]
    scale = float(np.clip(W / 700.0, 0.25, 0.9))
    thick = 1 if scale < 0.6 else 2
    font = cv2.FONT_HERSHEY_SIMPLEX

    def label(text: str, y_top: int) -> None:
        (tw, th), base = cv2.getTextSize(text, font, scale, thick)
        pad = max(2, int(4 * scale))
        y1 = min(H, y_top + th + base + 2 * pad)
        out[y_top:y1, 0:min(W, tw + 2 * pad)] = (out[y_top:y1, 0:min(W, tw + 2 * pad)] * 0.3).astype(np.uint8)
        cv2.putText(out, text, (pad, y_top + pad + th), font, scale, (255, 255, 255), thick, cv2.LINE_AA)

    if title:
        label(title, 0)
    if legend:
        (_, th), base = cv2.getTextSize(legend, font, scale, thick)
        label(legend, max(0, H - th - base - 2 * max(2, int(4 * scale))))
    if colorbar and W >= 16 and H >= 16:
        bw = max(3, W // 40)
        y0, y1 = H // 5, H - H // 5
        ramp = np.linspace(1.0, 0.0, max(y1 - y0, 2))[:, None].repeat(bw, axis=1)
        x0 = W - bw - max(2, W // 100)
        out[y0:y1, x0:x0 + bw] = heatmap_rgb(ramp)[: y1 - y0]
        cv2.rectangle(out, (x0 - 1, y0 - 1), (x0 + bw, y1), (255, 255, 255), 1)
        for text, y in (("1", y0), ("0", y1)):
            (tw, th), _ = cv2.getTextSize(text, font, scale * 0.8, 1)
            cv2.putText(out, text, (max(0, x0 - tw - 2), min(H - 1, y + th // 2)), font, scale * 0.8,
                        (255, 255, 255), 1, cv2.LINE_AA)
    return out


def save_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an (H, W, 3) / (H, W) uint8 image as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")


def load_png(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB (or (H, W) for grey images)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)


class Mp4Writer(CloseOnSuccess):
    """Append RGB frames to an mp4 (OpenCV ``mp4v``), written to a temp file and renamed on close.

    The size is fixed by the first frame; later frames of another size are resized to it.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 10.0):
        self.path, self.fps = Path(path), fps
        self._ctx = None
        self._tmp: Path | None = None
        self._writer = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame."""
        if self._writer is None:
            self._ctx = atomic_path(self.path)
            self._tmp = self._ctx.__enter__()
            h, w = rgb.shape[:2]
            self._size = (w, h)
            # OpenCV picks the container from the extension; the temp name ends in .tmp, so add .mp4
            self._tmp_mp4 = self._tmp.with_suffix(".mp4")
            self._writer = cv2.VideoWriter(str(self._tmp_mp4), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self._size)
            if not self._writer.isOpened():
                raise RuntimeError(f"OpenCV could not open an mp4 writer for {self.path}; "
                                   "install an opencv build with video support or pass --no-video")
        if (rgb.shape[1], rgb.shape[0]) != self._size:
            rgb = cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> int:
        """Finish the file (nothing is written when no frame came); returns the frame count."""
        if self._writer is not None:
            self._writer.release()
            os.replace(self._tmp_mp4, self._tmp)
            self._ctx.__exit__(None, None, None)
            self._writer = None
        return self.frames

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            Path(self._tmp_mp4).unlink(missing_ok=True)
            try:
                self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)
            except RuntimeError:
                pass
            self._writer = None

