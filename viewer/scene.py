"""What the viewer shows, read from an inference output folder (no viser here, so it is testable on its own).

Per frame: the camera (``geometry/cameras.json``, else the depth file's), a set of *candidate points* unprojected
from ``geometry/depth/<key>.safetensors`` with :func:`inference.geometry.frame_points` (or read from
``geometry/points/<key>.ply`` when there is no depth file), kept in a seeded random order and capped at
``max_points``, with their pixel, confidence, RGB colour and the PCA colour of each level. The viewer shows the
first ``budget`` candidates whose confidence passes the chosen percentile of the frame's confidences (so the
budget is a random subsample, and both knobs change the view without re-reading anything).

A frame whose camera is not finite (``null`` / ``inf`` focal lengths from a random backbone, ``NaN`` poses) or
degenerate (focal <= 0) gets no points and no frustum; the frames skipped are counted and named in one warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np

from inference.outputs import LEVELS, OutputLayout, read_depth
from utils.cli import UserError
from utils.io import read_json

log = logging.getLogger("viewer")

DEFAULT_MAX_POINTS = 60_000  # candidates kept per frame (the upper end of the point-budget slider)


@dataclass
class Camera:
    """One frame's camera: OpenCV camera-from-world ``extrinsics`` (3, 4), ``intrinsics`` (3, 3) for (H, W)."""

    key: str
    index: int
    hw: tuple[int, int]
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    problem: str | None = None  # why the camera cannot be used (None = usable)

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def rotation(self) -> np.ndarray:
        """World-from-camera rotation (3, 3), orthonormalised (a predicted R is only nearly a rotation)."""
        R = np.asarray(self.extrinsics[:3, :3], dtype=np.float64)
        u, _, vt = np.linalg.svd(R)
        R = u @ vt
        if np.linalg.det(R) < 0:
            R = u @ np.diag([1.0, 1.0, -1.0]) @ vt
        return R.T

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates: ``-R^T t``."""
        R = np.asarray(self.extrinsics[:3, :3], dtype=np.float64)
        return -R.T @ np.asarray(self.extrinsics[:3, 3], dtype=np.float64)

    @property
    def fov_y(self) -> float:
        """Vertical field of view in radians."""
        return float(2.0 * np.arctan(self.hw[0] / (2.0 * self.intrinsics[1, 1])))

    @property
    def aspect(self) -> float:
        return float(self.hw[1] / self.hw[0])


def camera_problem(K: np.ndarray, extr: np.ndarray) -> str | None:
    """Why a camera cannot place points (non-finite or non-positive focal length, non-finite pose), or None."""
    K = np.asarray(K, dtype=np.float64)
    extr = np.asarray(extr, dtype=np.float64)
    if K.shape != (3, 3) or extr.shape != (3, 4):
        return f"camera matrices of shape {K.shape} and {extr.shape}"
    if not np.isfinite(K).all():
        return f"non-finite intrinsics (focal {K[0, 0]}, {K[1, 1]})"
    if not np.isfinite(extr).all():
        return "non-finite extrinsics"
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        return f"focal length <= 0 ({K[0, 0]}, {K[1, 1]})"
    if abs(np.linalg.det(extr[:3, :3])) < 1e-6:
        return "singular rotation"
    return None


def _matrix(value, shape: tuple[int, int]) -> np.ndarray:
    """A JSON matrix (``null`` = NaN) as float64, or all-NaN when it is malformed."""
    try:
        m = np.array([[np.nan if v is None else v for v in row] for row in value], dtype=np.float64)
    except (TypeError, ValueError):
        return np.full(shape, np.nan)
    return m if m.shape == shape else np.full(shape, np.nan)


def load_cameras(layout: OutputLayout, keys: list[str]) -> dict[str, Camera]:
    """Cameras of ``keys`` from ``geometry/cameras.json`` (entries by key), else from each frame's depth file."""
    records: dict[str, dict] = {}
    if layout.cameras.exists():
        try:
            data = json.loads(layout.cameras.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"not valid JSON ({e.msg} at line {e.lineno})", layout.cameras,
                            "run inference again (it rewrites cameras.json from the depth files)") from None
        for rec in data.get("frames", []) if isinstance(data, dict) else []:
            if isinstance(rec, dict) and "key" in rec:
                records[str(rec["key"])] = rec
    cams = {}
    for i, key in enumerate(keys):
        rec = records.get(key)
        if rec is not None:
            K, extr = _matrix(rec.get("intrinsics"), (3, 3)), _matrix(rec.get("extrinsics"), (3, 4))
            hw = (int(rec.get("height", 0)), int(rec.get("width", 0)))
            index = int(rec.get("index", i))
        elif layout.depth(key).exists():
            d, meta = read_depth(layout.depth(key), names=("extrinsics", "intrinsics", "valid"))
            K, extr = d["intrinsics"].double().numpy(), d["extrinsics"].double().numpy()
            hw = tuple(d["valid"].shape)
            index = int(meta.get("frame_index", i))
        else:
            continue
        cams[key] = Camera(key, index, hw, K, extr, camera_problem(K, extr))
    return cams


@dataclass
class FramePoints:
    """Candidate points of one frame, in a seeded random order.

    xyz (N, 3) float32 world points; conf (N,) float32; pix (N, 2) int32 (row, col), or None when the points have
    no pixel (a PLY without a usable camera); colors {"rgb": (N, 3) uint8, "pca small": ..., ...};
    thresholds (101,) the 0..100th percentiles of the confidence of all the frame's points (before the cap).
    """

    xyz: np.ndarray
    conf: np.ndarray
    pix: np.ndarray | None
    colors: dict[str, np.ndarray]
    thresholds: np.ndarray
    total: int  # points before the cap

    def select(self, budget: int, percentile: float) -> np.ndarray:
        """Indices of the shown points: the first ``budget`` candidates whose confidence is >= the frame's
        ``percentile``-th confidence percentile (all candidates at 0)."""
        if len(self.conf) == 0:
            return np.zeros(0, dtype=np.int64)
        p = float(np.clip(percentile, 0.0, 100.0))
        thr = np.interp(p, np.arange(101), self.thresholds) if p > 0 else -np.inf
        idx = np.flatnonzero(self.conf >= thr)
        return idx[: max(0, int(budget))]


def _candidates(n: int, cap: int, seed: int) -> np.ndarray:
    """A seeded random order of ``min(n, cap)`` of ``n`` indices."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    return order[:cap]


def _pixel_colors(image: np.ndarray | None, pix: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Colours of an (H, W, 3) image at (row, col) pixels (grey when the picture is missing or of another size)."""
    if image is None or tuple(image.shape[:2]) != tuple(hw):
        return np.full((len(pix), 3), 128, dtype=np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[pix[:, 0], pix[:, 1], :3]).astype(np.uint8)


@dataclass
class SceneData:
    """Everything loaded from an inference output folder."""

    layout: OutputLayout
    keys: list[str]
    levels: tuple[str, ...]
    hw: dict[str, tuple[int, int]]
    cameras: dict[str, Camera]
    points: dict[str, FramePoints]
    skipped_cameras: dict[str, str] = field(default_factory=dict)  # key -> problem
    has_video: bool = False
    has_dynamic: bool = False  # PAGE-4D's dynamic mask (geometry/dynamic/) is there


    @property
    def n(self) -> int:
        return len(self.keys)

    def color_modes(self) -> list[str]:
        return ["rgb"] + [f"pca {lvl}" for lvl in self.levels] + (["dynamic"] if self.has_dynamic else [])


class FramePictures:
    """The pictures of a frame: the original (or reconstructed) RGB through :class:`eval.query.FrameImages`, and
    the PCA picture of each level (``pca/<level>/<key>.png``, else computed from the fields)."""

    def __init__(self, layout: OutputLayout, levels: tuple[str, ...]):
        from eval.query import FrameImages

        self.layout = layout
        self.levels = levels
        self.rgb_source = FrameImages(layout)
        self._projectors: dict[str, object] = {}

    def rgb(self, key: str, hw: tuple[int, int]) -> np.ndarray:
        return self.rgb_source(key, hw)

    def pca(self, level: str, key: str, hw: tuple[int, int]) -> np.ndarray:
        from inference.visualize import load_png

        path = self.layout.pca(level, key)
        if path.exists():
            img = load_png(path)
            if tuple(img.shape[:2]) == tuple(hw):
                return img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=-1)
        return self._pca_from_fields(level, key, hw)

    def _pca_from_fields(self, level: str, key: str, hw: tuple[int, int]) -> np.ndarray:
        from inference.outputs import read_fields
        from inference.visualize import PCAProjector

        f, _ = read_fields(self.layout.fields(key), names=(level,))
        if level not in f:
            return np.full((*hw, 3), 128, np.uint8)
        x = f[level].float()
        if level not in self._projectors:
            state = self.layout.root / "pca" / "projectors.json"
            proj = None
            if state.exists():
                try:
                    proj = PCAProjector.from_dict(json.loads(state.read_text())[level])
                except (KeyError, ValueError, json.JSONDecodeError):
                    proj = None
            self._projectors[level] = proj or PCAProjector.fit(x)
        return self._projectors[level](x)

    def dynamic(self, key: str, hw: tuple[int, int]) -> np.ndarray | None:
        """PAGE-4D's dynamic mask of frame ``key`` in heat colours (moving = warm), or None without one."""
        from inference.outputs import read_fields
        from inference.visualize import heatmap_rgb

        path = self.layout.dynamic(key)
        if not path.exists():
            return None
        d, _ = read_fields(path, names=("dynamic",))
        dyn = d["dynamic"].float().numpy()
        return heatmap_rgb(dyn + 0.5) if tuple(dyn.shape) == tuple(hw) else None

    def picture(self, mode: str, key: str, hw: tuple[int, int]) -> np.ndarray:
        """``rgb``, ``pca <level>`` or ``dynamic`` (the RGB where a frame has no dynamic mask)."""
        if mode.startswith("pca "):
            return self.pca(mode[4:], key, hw)
        if mode == "dynamic":
            img = self.dynamic(key, hw)
            if img is not None:
                return img
        return self.rgb(key, hw)


def check_output(layout: OutputLayout) -> list[str]:
    """The frame keys of an inference output, or a :class:`UserError` when it has no fields or no geometry."""
    root = layout.root
    if not root.is_dir():
        raise UserError("inference output folder not found", root,
                        "pass the --out folder of `python -m inference.run` (or scripts/infer.sh)")
    keys = layout.field_keys()
    if not keys:
        raise UserError("no fields in the folder (expected fields/<key>.safetensors)", root / "fields",
                        "run `python -m inference.run --out <this folder>` first")
    has_geometry = layout.cameras.exists() or any(layout.depth(k).exists() or layout.points(k).exists()
                                                  for k in keys)
    if not has_geometry:
        raise UserError("no geometry in the folder (expected geometry/cameras.json and geometry/depth/)",
                        root / "geometry", "run inference with a --backbone so that depth and cameras are written")
    return keys


def load_scene(layout: OutputLayout, max_points: int = DEFAULT_MAX_POINTS, seed: int = 0,
               pictures: FramePictures | None = None, progress: bool = False) -> SceneData:
    """Read cameras and candidate points of every frame (see the module docstring)."""
    from inference.geometry import frame_points
    from inference.outputs import read_fields
    from inference.ply import read_ply

    keys = check_output(layout)
    meta = read_json(layout.meta) if layout.meta.exists() else {}
    levels = tuple(meta.get("levels") or LEVELS)
    pictures = pictures or FramePictures(layout, levels)
    cameras = load_cameras(layout, keys)
    hw: dict[str, tuple[int, int]] = {}
    points: dict[str, FramePoints] = {}
    skipped: dict[str, str] = {}
    has_video = False
    has_dynamic = False
    iterator = keys
    if progress:
        from tqdm import tqdm

        iterator = tqdm(keys, desc="load", unit="frame")
    for key in iterator:
        f, _ = read_fields(layout.fields(key), names=(levels[0], "video"))
        has_video = has_video or "video" in f
        hw[key] = tuple(f[levels[0]].shape[-2:])
        cam = cameras.get(key)
        if cam is None:
            continue
        if not cam.ok:
            skipped[key] = cam.problem or "unusable camera"
            continue
        H, W = hw[key]
        rgb = pictures.rgb(key, (H, W))
        if layout.depth(key).exists():
            d, _ = read_depth(layout.depth(key), names=("depth", "conf", "valid"))
            depth, conf = d["depth"].double().numpy(), d["conf"].float().numpy()
            valid = d["valid"].numpy().astype(bool) & np.isfinite(depth) & (depth > 0)
            pts = frame_points(depth, conf, cam.intrinsics, cam.extrinsics, rgb, valid=valid)
            ok = np.isfinite(pts["xyz"]).all(axis=1)
            xyz, cf, pix, col = pts["xyz"][ok], pts["conf"][ok], pts["pix"][ok].astype(np.int32), pts["rgb"][ok]
        elif layout.points(key).exists():
            ply = read_ply(layout.points(key))
            xyz = ply.get("xyz", np.zeros((0, 3), np.float32))
            cf = ply.get("confidence", np.ones(len(xyz), np.float32)).astype(np.float32)
            col = ply.get("rgb", np.full((len(xyz), 3), 200, np.uint8))
            pix = _project(xyz, cam, (H, W))
            ok = np.isfinite(xyz).all(axis=1) & (pix[:, 0] >= 0 if pix is not None else True)
            xyz, cf, col = xyz[ok], cf[ok], col[ok]
            pix = pix[ok] if pix is not None else None
        else:
            continue
        total = len(xyz)
        thresholds = (np.percentile(cf, np.arange(101)).astype(np.float32) if total
                      else np.zeros(101, np.float32))
        sel = _candidates(total, max_points, seed + cam.index)
        xyz, cf, col = xyz[sel], cf[sel], col[sel]
        colors = {"rgb": np.ascontiguousarray(col, dtype=np.uint8)}
        if pix is not None:
            pix = np.ascontiguousarray(pix[sel])
            for lvl in levels:
                colors[f"pca {lvl}"] = _pixel_colors(pictures.pca(lvl, key, (H, W)), pix, (H, W))
            dyn = pictures.dynamic(key, (H, W))
            has_dynamic = has_dynamic or dyn is not None
            colors["dynamic"] = _pixel_colors(dyn, pix, (H, W)) if dyn is not None else colors["rgb"]
        else:
            colors["dynamic"] = colors["rgb"]
            for lvl in levels:
                colors[f"pca {lvl}"] = colors["rgb"]
        points[key] = FramePoints(np.ascontiguousarray(xyz, dtype=np.float32), cf, pix, colors, thresholds, total)
    if skipped:
        first = next(iter(skipped.items()))
        log.warning("%d of %d frames have a non-finite or degenerate camera: their points and frustums are "
                    "skipped (first: frame %s, %s)", len(skipped), len(keys), first[0], first[1])
    return SceneData(layout, keys, levels, hw, cameras, points, skipped, has_video, has_dynamic)


def _project(xyz: np.ndarray, cam: Camera, hw: tuple[int, int]) -> np.ndarray | None:
    """(row, col) pixel of each world point through the frame's camera (-1 when outside), or None."""
    from inference.geometry import project_points

    if len(xyz) == 0:
        return np.zeros((0, 2), np.int32)
    uv, z = project_points(xyz, cam.intrinsics, cam.extrinsics)
    H, W = hw
    ok = np.isfinite(uv).all(axis=1) & (z > 0)
    uv = np.where(ok[:, None], uv, -1.0)
    col, row = np.floor(uv[:, 0]).astype(np.int64), np.floor(uv[:, 1]).astype(np.int64)
    ok &= (row >= 0) & (row < H) & (col >= 0) & (col < W)
    return np.stack([np.where(ok, row, -1), np.where(ok, col, -1)], axis=1).astype(np.int32)


def scene_scale(scene: SceneData) -> float:
    """A length for frustum sizes: the median distance of the points from their centroid (or the cameras')."""
    pts = [p.xyz[:2000] for p in scene.points.values() if len(p.xyz)]
    if pts:
        x = np.concatenate(pts).astype(np.float64)
        s = float(np.median(np.linalg.norm(x - np.median(x, axis=0), axis=1)))
        if np.isfinite(s) and s > 0:
            return s
    centers = np.array([c.center for c in scene.cameras.values() if c.ok])
    if len(centers) > 1:
        s = float(np.median(np.linalg.norm(centers - centers.mean(axis=0), axis=1)))
        if np.isfinite(s) and s > 0:
            return s
    return 1.0


def scene_center(scene: SceneData) -> np.ndarray:
    pts = [p.xyz[:2000] for p in scene.points.values() if len(p.xyz)]
    if pts:
        return np.median(np.concatenate(pts).astype(np.float64), axis=0)
    centers = np.array([c.center for c in scene.cameras.values() if c.ok])
    return centers.mean(axis=0) if len(centers) else np.zeros(3)
