"""Ground-truth readers (TUM RGB-D / Bonn, Sintel, HyperNeRF, our synthetic world) and the prediction reader.

The one folder form each ``--gt-format`` takes for one sequence, and as a dataset root:

=============  ====================================================  ==============================================
format         a sequence                                            a dataset root
=============  ====================================================  ==============================================
``tum``        ``<seq>/`` with ``rgb.txt``, ``depth.txt``,           a folder of such sequence folders
``bonn``       ``groundtruth.txt``, ``rgb/``, ``depth/`` (16-bit
               PNG, metres x 5000)
``sintel``     (none: name it with ``--sequences`` or the            ``<Sintel>/training`` holding
               prediction folder's name)                             ``depth/<seq>/*.dpt``, ``camdata_left/<seq>/*.cam``
``hypernerf``  ``<scene>/`` with ``camera/<key>.json`` (poses only)  a folder of such scenes
``synthetic``  ``<scene>/`` holding ``gt/geometry/`` (our inference  a folder of such scenes
               output format: ``depth/<key>.safetensors``,
               ``cameras.json``)
=============  ====================================================  ==============================================

Frames are matched by key (the frame's file stem, as our inference names its outputs): TUM / Bonn keys are the
``rgb.txt`` file stems, each taking the depth frame and pose with the nearest timestamp (no interpolation); Sintel
keys are ``frame_0001``...; HyperNeRF keys the ``camera/`` file stems; synthetic keys those of ``gt/geometry``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from eval.geometry.poses import c2w_from_cam_from_world, c2w_from_hypernerf, c2w_from_tum
from inference.outputs import OutputLayout, read_depth
from utils.cli import UserError

GT_FORMATS = ("synthetic", "tum", "bonn", "sintel", "hypernerf")
SINTEL_TAG = 202021.25
TUM_DEPTH_FACTOR = 5000.0


class GroundTruthError(UserError):
    """Ground truth that is missing or cannot be read as its format."""


class PredictionError(UserError):
    """A prediction folder (inference output) that is missing, incomplete or inconsistent."""


@dataclass
class SequenceGT:
    """One sequence's ground truth: frame keys in order, per key a depth file (or none) and a camera-to-world pose
    (or none); ``read_depth(path)`` -> (H, W) depth (≤ 0 = no ground truth); ``assoc_dt`` the largest TUM
    timestamp gap of the nearest-timestamp association (seconds)."""

    name: str
    root: Path
    keys: list[str]
    depth_files: dict[str, Path] = field(default_factory=dict)
    read_depth: Callable[[Path], np.ndarray] | None = None
    c2w: dict[str, np.ndarray] = field(default_factory=dict)
    assoc_dt: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- file formats

def read_dpt(path: str | os.PathLike) -> np.ndarray:
    """A Sintel ``.dpt`` depth file (float32 tag 202021.25, int32 width, int32 height, float32 rows) -> (H, W) float32."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 12 or np.frombuffer(raw[:4], "<f4")[0] != np.float32(SINTEL_TAG):
        raise GroundTruthError("not a Sintel .dpt depth file (wrong tag)", path, "pass the Sintel depth/<seq>/*.dpt files")
    w, h = (int(v) for v in np.frombuffer(raw[4:12], "<i4"))
    if w <= 0 or h <= 0 or len(raw) != 12 + 4 * w * h:
        raise GroundTruthError(f"a .dpt file of {len(raw)} bytes does not hold {w}x{h} floats", path,
                               "the file is truncated or damaged: restore it")
    return np.frombuffer(raw[12:], "<f4").reshape(h, w).copy()


def write_dpt(path: str | os.PathLike, depth: np.ndarray) -> None:
    """Write a Sintel ``.dpt`` file (the inverse of :func:`read_dpt`; tests and conversions)."""
    depth = np.asarray(depth, dtype="<f4")
    h, w = depth.shape
    Path(path).write_bytes(np.float32(SINTEL_TAG).astype("<f4").tobytes() + np.array([w, h], "<i4").tobytes()
                           + depth.tobytes())


def read_cam(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A Sintel ``.cam`` file (float32 tag, 3x3 intrinsics float64, 3x4 world-to-camera extrinsics float64) ->
    (K (3, 3), camera-from-world (3, 4))."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 4 + 8 * 21 or np.frombuffer(raw[:4], "<f4")[0] != np.float32(SINTEL_TAG):
        raise GroundTruthError("not a Sintel .cam camera file (wrong tag or size)", path,
                               "pass the Sintel camdata_left/<seq>/*.cam files")
    vals = np.frombuffer(raw[4:4 + 8 * 21], "<f8")
    return vals[:9].reshape(3, 3).copy(), vals[9:].reshape(3, 4).copy()


def write_cam(path: str | os.PathLike, K: np.ndarray, extr: np.ndarray) -> None:
    """Write a Sintel ``.cam`` file (the inverse of :func:`read_cam`)."""
    Path(path).write_bytes(np.float32(SINTEL_TAG).astype("<f4").tobytes()
                           + np.asarray(K, "<f8").reshape(9).tobytes() + np.asarray(extr, "<f8").reshape(12).tobytes())


def read_tum_png(path: str | os.PathLike) -> np.ndarray:
    """A TUM / Bonn 16-bit depth PNG -> (H, W) float64 metres (value / 5000; 0 = no measurement)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise GroundTruthError("cannot be read as a depth PNG", path, "the file is missing or damaged")
    if img.dtype != np.uint16 or img.ndim != 2:
        raise GroundTruthError(f"not a 16-bit single-channel depth PNG ({img.dtype}, shape {img.shape})", path,
                               "TUM / Bonn depth is a 16-bit PNG in metres x 5000")
    return img.astype(np.float64) / TUM_DEPTH_FACTOR


def read_tum_list(path: Path, columns: int) -> tuple[np.ndarray, list[list[str]]]:
    """A TUM list file (``#`` comments; ``timestamp value...`` per line) -> (timestamps (N,), the other columns)."""
    if not path.is_file():
        raise GroundTruthError("TUM / Bonn list file not found", path,
                               "a sequence holds rgb.txt, depth.txt and groundtruth.txt")
    stamps, rest = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < columns:
            raise GroundTruthError(f"line {n} has {len(parts)} columns, expected {columns}", path,
                                   "fix or restore the file")
        try:
            stamps.append(float(parts[0]))
        except ValueError:
            raise GroundTruthError(f"line {n}: timestamp {parts[0]!r} is not a number", path, "fix the file") from None
        rest.append(parts[1:columns])
    return np.asarray(stamps, dtype=np.float64), rest


def nearest(stamps: np.ndarray, t: float) -> int:
    """Index of the timestamp nearest to ``t`` (the first of equals)."""
    return int(np.argmin(np.abs(stamps - t)))


# ------------------------------------------------------------------------------------------ sequence readers

def read_tum_sequence(seq: Path) -> SequenceGT:
    """TUM RGB-D / Bonn sequence: each ``rgb.txt`` frame takes the nearest-timestamp depth and pose."""
    rgb_t, rgb = read_tum_list(seq / "rgb.txt", 2)
    gt = SequenceGT(seq.name, seq, [Path(r[0]).stem for r in rgb], read_depth=read_tum_png)
    if (seq / "depth.txt").is_file():
        d_t, d = read_tum_list(seq / "depth.txt", 2)
        if len(d_t):
            for key, t in zip(gt.keys, rgb_t, strict=True):
                gt.depth_files[key] = seq / d[nearest(d_t, t)][0]
    if (seq / "groundtruth.txt").is_file():
        p_t, rows = read_tum_list(seq / "groundtruth.txt", 8)
        try:
            vals = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
        except ValueError:
            raise GroundTruthError("pose values are not numbers", seq / "groundtruth.txt", "fix the file") from None
        if len(p_t) < len(gt.keys):
            raise GroundTruthError(f"{len(p_t)} poses for {len(gt.keys)} frames", seq / "groundtruth.txt",
                                   "a trajectory needs a pose for every frame: restore the full groundtruth.txt")
        c2w = c2w_from_tum(vals[:, :3], vals[:, 3:7])
        for key, t in zip(gt.keys, rgb_t, strict=True):
            i = nearest(p_t, t)
            gt.c2w[key] = c2w[i]
            gt.assoc_dt[key] = float(abs(p_t[i] - t))
    return gt


def read_sintel_sequence(root: Path, name: str) -> SequenceGT:
    """Sintel sequence ``name`` of ``<Sintel>/training``: ``depth/<name>/*.dpt`` and ``camdata_left/<name>/*.cam``."""
    ddir, cdir = root / "depth" / name, root / "camdata_left" / name
    if not ddir.is_dir() and not cdir.is_dir():
        raise GroundTruthError(f"no Sintel sequence {name!r} (neither depth/{name} nor camdata_left/{name})", root,
                               "pass the Sintel training folder and a sequence it holds")
    depth = {p.stem: p for p in sorted(ddir.glob("*.dpt"))} if ddir.is_dir() else {}
    cams = {p.stem: p for p in sorted(cdir.glob("*.cam"))} if cdir.is_dir() else {}
    keys = sorted(set(depth) | set(cams))
    gt = SequenceGT(name, root, keys, depth_files=depth, read_depth=read_dpt)
    if cams:
        if len(cams) < len(keys):
            raise GroundTruthError(f"{len(cams)} camera files for {len(keys)} frames", cdir,
                                   "a trajectory needs a pose for every frame: restore the .cam files")
        for k, p in cams.items():
            gt.c2w[k] = c2w_from_cam_from_world(read_cam(p)[1][None])[0]
    return gt


def read_hypernerf_sequence(scene: Path) -> SequenceGT:
    """HyperNeRF scene: ``camera/<key>.json`` (``orientation``, ``position``); no depth."""
    files = sorted((scene / "camera").glob("*.json"))
    if not files:
        raise GroundTruthError("no camera/*.json", scene, "a HyperNeRF scene holds camera/<key>.json files")
    gt = SequenceGT(scene.name, scene, [p.stem for p in files])
    for p in files:
        cam = json.loads(p.read_text())
        try:
            gt.c2w[p.stem] = c2w_from_hypernerf(cam["orientation"], cam["position"])
        except (KeyError, ValueError, TypeError) as e:
            raise GroundTruthError(f"not a HyperNeRF camera (needs orientation 3x3 and position 3: {e})", p,
                                   "restore the camera file") from None
    return gt


def _read_our_depth(path: Path) -> np.ndarray:
    tensors, _ = read_depth(path, ("depth", "valid"))
    depth = tensors["depth"].float().numpy()
    if "valid" in tensors:
        depth = np.where(tensors["valid"].numpy().astype(bool), depth, 0.0).astype(np.float32)
    return depth


def read_cameras_json(path: Path, what: str) -> dict[str, dict]:
    """``geometry/cameras.json`` (ours, or the synthetic ground truth's) -> {key: record}, in file order."""
    err = PredictionError if what == "prediction" else GroundTruthError
    if not path.is_file():
        raise err(f"{what} cameras not found", path, "an inference output / the synthetic gt holds geometry/cameras.json")
    frames = json.loads(path.read_text()).get("frames")
    if not isinstance(frames, list):
        raise err("cameras.json has no frames list", path, "regenerate it")
    return {f["key"]: f for f in frames}


def read_synthetic_sequence(scene: Path) -> SequenceGT:
    """Our synthetic world's ``<scene>/gt/geometry/`` (the inference output format; depth = camera z, ``valid``)."""
    layout = OutputLayout(scene / "gt")
    cams = read_cameras_json(layout.cameras, "ground-truth")
    gt = SequenceGT(scene.name, scene, list(cams), read_depth=_read_our_depth)
    for key, rec in cams.items():
        gt.depth_files[key] = layout.depth(key)
        gt.c2w[key] = c2w_from_cam_from_world(np.asarray(rec["extrinsics"], dtype=np.float64)[None])[0]
    return gt


# ------------------------------------------------------------------------------------- sequences of a folder

def is_sequence(path: Path, fmt: str) -> bool:
    """True when ``path`` is itself one sequence of ``fmt`` (see the module table)."""
    if fmt in ("tum", "bonn"):
        return (path / "rgb.txt").is_file()
    if fmt == "hypernerf":
        return (path / "camera").is_dir()
    if fmt == "synthetic":
        return (path / "gt" / "geometry").is_dir()
    return False  # sintel: always a dataset root


def sequence_names(root: Path, fmt: str) -> list[str]:
    """Sequences of a dataset root of ``fmt``."""
    if fmt == "sintel":
        names = {p.name for sub in ("depth", "camdata_left") if (root / sub).is_dir()
                 for p in (root / sub).iterdir() if p.is_dir()}
        return sorted(names)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_sequence(p, fmt))


def read_sequence(gt_root: Path, fmt: str, name: str | None) -> SequenceGT:
    """The ground truth of one sequence: ``gt_root`` itself (``name`` None) or its sequence ``name``."""
    if fmt not in GT_FORMATS:
        raise ValueError(f"unknown ground-truth format {fmt!r}")
    if fmt == "sintel":
        return read_sintel_sequence(gt_root, name or "")
    seq = gt_root if name is None else gt_root / name
    if not is_sequence(seq, fmt):
        raise GroundTruthError(f"not a {fmt} sequence", seq, _FORM_HINT[fmt])
    return {"tum": read_tum_sequence, "bonn": read_tum_sequence, "hypernerf": read_hypernerf_sequence,
            "synthetic": read_synthetic_sequence}[fmt](seq)


_FORM_HINT = {
    "tum": "a TUM sequence folder holds rgb.txt, depth.txt, groundtruth.txt, rgb/ and depth/",
    "bonn": "a Bonn sequence folder holds rgb.txt, depth.txt, groundtruth.txt, rgb/ and depth/",
    "hypernerf": "a HyperNeRF scene holds camera/<key>.json",
    "synthetic": "a synthetic scene holds gt/geometry/ (made by preprocess.make_synthetic)",
    "sintel": "pass the Sintel training folder (depth/<seq>/, camdata_left/<seq>/)",
}


# ------------------------------------------------------------------------------------------------ prediction

@dataclass
class Prediction:
    """One inference output's geometry: frame keys in cameras.json order, per key its depth file and
    camera-to-world pose."""

    root: Path
    keys: list[str]
    depth_files: dict[str, Path]
    c2w: dict[str, np.ndarray]
    sizes: dict[str, tuple[int, int]]
    backbone: str | None = None


def is_prediction(path: Path) -> bool:
    return (path / "geometry" / "cameras.json").is_file()


def read_prediction(out: Path) -> Prediction:
    """``OUT/geometry/``: cameras.json (camera-from-world, OpenCV) and ``depth/<key>.safetensors``; every depth file
    needs a camera (else the trajectory has fewer poses than frames)."""
    layout = OutputLayout(out)
    cams = read_cameras_json(layout.cameras, "prediction")
    ddir = out / "geometry" / "depth"
    depth_keys = sorted(p.stem for p in ddir.glob("*.safetensors")) if ddir.is_dir() else []
    missing = [k for k in depth_keys if k not in cams]
    if missing:
        raise PredictionError(f"{len(cams)} poses for {len(set(depth_keys) | set(cams))} frames (no camera for "
                              f"{missing[:3]})", layout.cameras,
                              "run inference again so that cameras.json covers every frame")
    c2w, sizes = {}, {}
    for key, rec in cams.items():
        extr = np.asarray(rec.get("extrinsics"), dtype=np.float64)
        if extr.shape != (3, 4) or not np.isfinite(extr).all():
            raise PredictionError(f"frame {key}: extrinsics are not a finite 3x4 matrix", layout.cameras,
                                  "run inference again")
        c2w[key] = c2w_from_cam_from_world(extr[None])[0]
        sizes[key] = (int(rec.get("height", 0)), int(rec.get("width", 0)))
    backbone = json.loads(layout.meta.read_text()).get("backbone_id") if layout.meta.is_file() else None
    return Prediction(out, list(cams), {k: layout.depth(k) for k in cams}, c2w, sizes, backbone)


def read_prediction_depth(pred: Prediction, key: str) -> np.ndarray:
    """One frame's predicted depth (H, W) float32, checked: present, 2-D, the size cameras.json records, finite."""
    path = pred.depth_files[key]
    if not path.is_file():
        raise PredictionError(f"frame {key}: depth file not found", path, "run inference again (it resumes)")
    tensors, _ = read_depth(path, ("depth",))
    if "depth" not in tensors:
        raise PredictionError("no 'depth' tensor", path, "run inference again with --overwrite")
    depth = tensors["depth"].float().numpy()
    want = pred.sizes.get(key)
    if depth.ndim != 2 or (want and all(want) and depth.shape != want):
        raise PredictionError(f"depth of shape {tuple(depth.shape)}, but cameras.json records "
                              f"{want[0]}x{want[1]}", path, "the file does not belong to this output: run inference "
                              "again with --overwrite")
    if not np.isfinite(depth).all():
        raise PredictionError(f"depth has {int((~np.isfinite(depth)).sum())} non-finite values (NaN / inf)", path,
                              "run inference again with --overwrite (a non-finite depth is a failed prediction)")
    return depth


def read_gt_depth(gt: SequenceGT, key: str) -> np.ndarray:
    """One frame's ground-truth depth (H, W), checked: present, 2-D, no NaN (≤ 0 means no measurement)."""
    path = gt.depth_files.get(key)
    if path is None or not path.is_file():
        raise GroundTruthError(f"frame {key}: ground-truth depth not found", path or gt.root,
                               "restore the dataset's depth files")
    depth = gt.read_depth(path)
    if depth.ndim != 2:
        raise GroundTruthError(f"depth of shape {depth.shape} is not a 2-D map", path, "restore the file")
    if np.isnan(depth).any():
        raise GroundTruthError("ground-truth depth holds NaN", path, "restore the file (no measurement is 0)")
    return depth
