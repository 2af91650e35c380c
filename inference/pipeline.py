"""The streaming inference loop, independent of which networks produce the predictions.

A *predictor* turns one chunk of preprocessed frames into network-resolution predictions
(:class:`ChunkOutput`); this module maps them back onto the original frames (:mod:`inference.geometry`),
writes every per-frame file atomically (:mod:`inference.outputs`), builds ``cameras.json`` and the
fused point cloud, and never holds more than one chunk of predictions in memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from inference.geometry import (
    camera_record,
    extrinsics_to_original,
    frame_points,
    intrinsics_to_original,
    is_rotation,
    uncrop_map,
)
from inference.outputs import (
    CAMERA_CONVENTION,
    LEVELS,
    OutputLayout,
    read_depth,
    read_fields_header,
    write_depth,
    write_dynamic,
    write_fields,
)
from inference.ply import PlyStreamWriter, read_ply, write_ply
from inference.visualize import Mp4Writer, PCAProjector, depth_picture, load_png, save_png, to_uint8_image
from preprocess.crop import CropInfo
from utils.cli import UserError, interrupted
from utils.io import read_json, save_json_atomic
from utils.lock import output_lock

log = logging.getLogger(__name__)


@dataclass
class Frame:
    """One preprocessed frame.

    Attributes:
        key: frame key (file stem); index: 0-based position in the video.
        rgb: (H, W, 3) uint8 original frame; image: (3, h, w) float network input in [0, 1].
        crop: where ``image`` lies in ``rgb`` (:class:`preprocess.frames.CropInfo`).
    """

    key: str
    index: int
    rgb: np.ndarray
    image: torch.Tensor
    crop: CropInfo


@dataclass
class ChunkOutput:
    """Predictions for S frames on the network grid (h, w); geometry entries are None when not predicted.

    Attributes:
        fields: {level: (S, lang_dim, h, w)} (+ "video": (S, 6, h, w) with a time-sensitive head).
        rgb: (S, 3, h, w) in [0, 1] or None.
        depth, conf: (S, h, w) or None.
        extrinsics: (S, 3, 4) camera-from-world; intrinsics: (S, 3, 3) for the (h, w) grid; or None.
        on_frame: fields and rgb already cover the whole (turned) source frame, ``crop.source_hw`` (the published
            head stretches its grid onto it): only the quarter turn is undone, nothing is un-cropped.
    """

    fields: dict[str, torch.Tensor]
    rgb: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    conf: torch.Tensor | None = None
    extrinsics: torch.Tensor | None = None
    intrinsics: torch.Tensor | None = None
    on_frame: bool = False
    #: PAGE-4D: (S, h, w) per-pixel dynamic mask on the network grid (``attn_value`` of the patch), or None
    dynamic: torch.Tensor | None = None


#: predictor(frames of one chunk, keep) -> ChunkOutput. ``keep[i]`` False means frame i is only
#: streamed for context (already written, resume) and its outputs are not needed.
Predictor = Callable[[list[Frame], list[bool]], ChunkOutput]


@dataclass
class InferenceSettings:
    """Everything that shapes the outputs (stored in meta.json)."""

    chunk: int = 8
    levels: tuple[str, ...] = LEVELS
    geometry: bool = True
    #: False: geometry alone (``inference.run --geometry-only``): no fields file, PCA or RGB pictures
    fields: bool = True
    pca: bool = True
    rgb: bool = True
    video: bool = False
    fps: float = 10.0
    conf_percentile: float = 25.0
    min_conf: float = 0.0
    point_stride: int = 2
    fused_max_points: int = 2_000_000
    overwrite: bool = False
    published_png: bool = False
    extra_meta: dict = field(default_factory=dict)
    #: what makes the frames (decoder, backbone, autoencoder, preprocessing: resolved paths and ids), recorded in
    #: meta.json beside the settings that shape each frame's files; a resume refuses a folder made otherwise
    provenance: dict = field(default_factory=dict)


#: settings that shape each frame's files: a resumed run must keep them (``video``, ``fps`` and
#: ``fused_max_points`` shape only what the end of a run writes from every frame; ``overwrite`` is how to run)
FRAME_SETTINGS = ("chunk", "levels", "geometry", "fields", "pca", "rgb", "conf_percentile", "min_conf",
                  "point_stride", "published_png")


def run_record(settings: InferenceSettings) -> dict:
    """meta.json's ``run`` entry: the frame-shaping settings and the provenance, one flat dict (JSON types)."""
    chosen = {k: v for k, v in asdict(settings).items() if k in FRAME_SETTINGS}
    return json.loads(json.dumps({**chosen, **settings.provenance}))


def check_resumable(layout: OutputLayout, record: dict, overwrite: bool = False) -> None:
    """Refuse (one :class:`UserError` naming meta.json) a folder whose recorded run differs from ``record``: the
    frames it keeps would mix two models or two settings (``overwrite``: recomputing every frame is allowed). A
    folder from before the record, or holding no frame yet (a run that failed before its first), is not checked.
    A damaged meta.json is refused without ``overwrite``; one with a ``format`` (another tool's folder, a token
    cache say) even with it: that folder is not ours to overwrite."""
    if not layout.meta.exists():
        return
    fix = "pass --overwrite to recompute every frame, use the old settings to resume, or choose another --out folder"
    try:
        meta = read_json(layout.meta, fix)
    except UserError:  # damaged: ours to rewrite with --overwrite
        if overwrite:
            return
        raise
    if isinstance(meta, dict) and "format" in meta:  # e.g. a token cache's: never overwritten
        raise UserError(f"this folder belongs to another tool (its meta.json has format {meta['format']!r})",
                        layout.meta, "choose another --out folder")
    if not isinstance(meta, dict) or not {"frames", "settings"} <= meta.keys():
        if overwrite:
            return
        raise UserError("this meta.json is not an inference output's (no frames and settings)", layout.meta, fix)
    old = meta.get("run")
    if overwrite or not layout.holds_frames() or old is None or old == record:
        return
    old = old if isinstance(old, dict) else {}
    diffs = [f"{k} was {old.get(k)!r}, now {record.get(k)!r}" for k in sorted(old.keys() | record.keys())
             if old.get(k) != record.get(k)]
    raise UserError(f"this output folder holds frames made by another run ({'; '.join(diffs)})", layout.meta, fix)


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Yield lists of ``size`` consecutive items (the last may be shorter)."""
    buf = []
    for item in items:
        buf.append(item)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def run_inference(frames: Iterable[Frame], num_frames: int, predictor: Predictor, out: str | Path,
                  settings: InferenceSettings, keys: list[str] | None = None,
                  setup: Callable[[Path], None] | None = None) -> dict:
    """Stream ``frames`` through ``predictor`` chunk by chunk and write the output layout under ``out``.

    Args:
        frames: iterator of :class:`Frame` in video order (loaded lazily; only one chunk is alive).
        num_frames: total number of frames (for the progress bar and meta.json).
        keys: all frame keys in order (for meta.json); taken from the frames when None.
        setup: called with the output folder once it is locked and its recorded run checked, before any frame
            (e.g. copying the autoencoder in, so that no other run's copy is overwritten).
    Returns:
        summary dict (frames written / skipped, seconds, frames per second, output paths).
    """
    layout = OutputLayout(out)
    layout.root.mkdir(parents=True, exist_ok=True)
    with output_lock(layout.root, "this inference output folder"):
        check_resumable(layout, run_record(settings), settings.overwrite)
        if setup is not None:
            setup(layout.root)
        return _run_locked(frames, num_frames, predictor, layout, settings, keys)


def _meta(s: InferenceSettings, keys: list[str], lang_dim: int | None, out_hw: tuple[int, int] | None) -> dict:
    """meta.json: written when a run starts (so a killed run's folder records what made it) and when it ends."""
    return {"frames": keys, "levels": list(s.levels), "lang_dim": lang_dim,
            "height": out_hw[0] if out_hw else None, "width": out_hw[1] if out_hw else None,
            "settings": {k: v for k, v in asdict(s).items() if k not in ("extra_meta", "provenance")},
            "run": run_record(s), "camera_convention": CAMERA_CONVENTION,
            "validity": "fields/<key>.safetensors 'valid' = 1 inside the network crop; outside it predictions are "
                        "the nearest edge values", **s.extra_meta}


def _run_locked(frames: Iterable[Frame], num_frames: int, predictor: Predictor, layout: OutputLayout,
                settings: InferenceSettings, keys: list[str] | None) -> dict:
    s = settings
    if not layout.meta.exists() or s.overwrite or not layout.holds_frames():
        save_json_atomic(_meta(s, keys or [], None, None), layout.meta)
    pca_state_path = layout.root / "pca" / "projectors.json"
    projectors: dict[str, PCAProjector] = {}
    if pca_state_path.exists() and not s.overwrite:
        projectors = {k: PCAProjector.from_dict(v) for k, v in read_json(pca_state_path).items()}
    done_kwargs = {"levels": s.levels, "geometry": s.geometry, "rgb": s.rgb, "pca": s.pca, "fields": s.fields}
    seen_keys: list[str] = []
    written = skipped = 0
    lang_dim = None
    out_hw = None
    t0 = time.perf_counter()
    with tqdm(total=num_frames, desc="inference", unit="frame") as bar, \
            _say_kept_on_interrupt(layout, num_frames, lambda: written + skipped):  # bar closed even on errors
        for chunk in chunked(frames, s.chunk):
            seen_keys += [f.key for f in chunk]
            keep = [s.overwrite or not layout.frame_done(f.key, **done_kwargs) for f in chunk]
            if not any(keep) and getattr(predictor, "stateless", False):
                skipped += len(chunk)
                bar.update(len(chunk))
                continue
            # A chunk with any frame to write is predicted whole: the networks then see the batch an uninterrupted
            # run gives them, so a resume after a kill mid-chunk writes the same bytes on every CPU (a matrix
            # product's last bits may depend on its batch size: the tiny decoder's and depth head's do here).
            pred = predictor(chunk, [any(keep)] * len(chunk))
            for i, f in enumerate(chunk):
                out_hw = f.rgb.shape[:2]
                if not keep[i]:
                    skipped += 1
                    if lang_dim is None and s.fields:
                        lang_dim = read_fields_header(layout.fields(f.key))[1].get("lang_dim")
                    continue
                lang_dim = _write_frame(layout, f, pred, i, s, projectors, pca_state_path)
                written += 1
            bar.update(len(chunk))
            del pred
    elapsed = time.perf_counter() - t0
    all_keys = keys or seen_keys
    summary = {"frames": len(all_keys), "written": written, "skipped": skipped, "seconds": elapsed,
               "frames_per_second": written / elapsed if elapsed > 0 and written else None}
    if s.geometry:
        summary["cameras"] = str(write_cameras(layout, all_keys))
        summary["fused_points"] = write_fused(layout, all_keys, s.fused_max_points)
    if s.video:
        summary["videos"] = [str(p) for p in write_videos(layout, all_keys, s)]
    save_json_atomic(_meta(s, all_keys, lang_dim, out_hw), layout.meta)
    summary["out"] = str(layout.root)
    return summary


@contextlib.contextmanager
def _say_kept_on_interrupt(layout: OutputLayout, num_frames: int, done) -> Iterator[None]:
    """Turn Ctrl-C / SIGTERM into :class:`utils.cli.Interrupted` saying how many frames are on disk."""
    try:
        yield
    except KeyboardInterrupt as e:
        raise interrupted(e, f"{done()} of {num_frames} frames kept", layout.root,
                          "re-run the same command to resume (finished frames are kept)") from None


def _write_frame(layout: OutputLayout, f: Frame, pred: ChunkOutput, i: int, s: InferenceSettings,
                 projectors: dict[str, PCAProjector], pca_state_path: Path) -> int:
    """Map frame ``i`` of ``pred`` to the original resolution and write its files (fields last). Returns the
    fields' channels (None for geometry alone)."""
    if not s.fields:
        _write_geometry_files(layout, f, pred, i, s)
        return None
    fields_net = {k: v[i].float() for k, v in pred.fields.items()}
    if s.published_png:
        write_published_pngs(layout, f, fields_net, pred.rgb[i] if pred.rgb is not None else None, s.levels)
    stacked = torch.cat([fields_net[k] for k in fields_net], dim=0)
    full, valid = _to_original(stacked.cpu(), f.crop, pred.on_frame)
    fields, start = {}, 0
    for k, v in fields_net.items():
        fields[k] = full[start:start + v.shape[0]]
        start += v.shape[0]
    lang_dim = int(fields[s.levels[0]].shape[0])
    if s.rgb and pred.rgb is not None:
        rgb_full, _ = _to_original(pred.rgb[i].float().cpu(), f.crop, pred.on_frame)
        save_png(layout.rgb(f.key), to_uint8_image(rgb_full))
    if s.pca:
        new = False
        for level in s.levels:
            if level not in projectors:
                projectors[level] = PCAProjector.fit(fields[level])
                new = True
            save_png(layout.pca(level, f.key), projectors[level](fields[level]))
        if new:
            save_json_atomic({k: p.to_dict() for k, p in projectors.items()}, pca_state_path)
    if s.geometry:
        _write_geometry_files(layout, f, pred, i, s)
    meta = {"frame_key": f.key, "frame_index": f.index, "lang_dim": lang_dim, "levels": list(s.levels),
            **{k: v for k, v in s.extra_meta.items() if k in ("autoencoder", "decoder", "backbone", "preset")}}
    write_fields(layout.fields(f.key), fields, meta, valid)
    return lang_dim


def _write_geometry_files(layout: OutputLayout, f: Frame, pred: ChunkOutput, i: int, s: InferenceSettings) -> None:
    """Frame ``i``'s depth, camera, point cloud and (PAGE-4D) dynamic mask."""
    if pred.depth is None or pred.extrinsics is None:
        raise RuntimeError("geometry outputs were requested but the predictor gave no depth/cameras; "
                           "pass --no-geometry or use a backbone with depth and camera heads")
    _write_geometry(layout, f, pred, i, s)
    if pred.dynamic is not None:
        (dyn,), valid_dyn = uncrop_map(pred.dynamic[i].float().cpu()[None], f.crop)
        write_dynamic(layout.dynamic(f.key), dyn, valid_dyn, {"frame_key": f.key, "frame_index": f.index})


def _to_original(x: torch.Tensor, crop: CropInfo, on_frame: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A (C, h, w) prediction -> ((C, H, W) on the original pixels, valid (H, W) bool)."""
    if not on_frame:
        return uncrop_map(x, crop)
    if tuple(x.shape[-2:]) != tuple(crop.source_hw):
        raise ValueError(f"on-frame predictions of shape {tuple(x.shape)} do not cover the {crop.source_hw} frame")
    return crop.unturn(x), torch.ones(crop.orig_hw, dtype=torch.bool)


def published_png(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) -> (H, W, 3) uint8 by the published rule (``torchvision.utils.save_image``):
    ``clamp(x * 255 + 0.5, 0, 255)`` truncated, so values outside [0, 1] are clipped."""
    return x.detach().float().cpu().mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()


def write_published_pngs(layout: OutputLayout, f: Frame, fields: dict[str, torch.Tensor], rgb: torch.Tensor | None,
                         levels: tuple[str, ...]) -> None:
    """The published file layout for diffing against the published release: ``published/lang/<level>/%05d.png``
    (frame position + 1) and ``published/rgb/%05d.png``, on the grid the head produced (a landscape frame stays
    turned, as published). Only a 3-channel language field has a published picture."""
    name = f"{f.index + 1:05d}.png"
    for level in levels:
        if fields[level].shape[0] == 3:
            save_png(layout.root / "published" / "lang" / level / name, published_png(fields[level]))
    if rgb is not None:
        save_png(layout.root / "published" / "rgb" / name, published_png(rgb))


def _write_geometry(layout: OutputLayout, f: Frame, pred: ChunkOutput, i: int, s: InferenceSettings) -> None:
    dc = torch.stack([pred.depth[i].float().cpu(), pred.conf[i].float().cpu()])
    (depth, conf), valid = uncrop_map(dc, f.crop)
    extr = extrinsics_to_original(pred.extrinsics[i].double().cpu().numpy(), f.crop)
    if not is_rotation(extr[:3, :3], atol=1e-3):
        log.warning("frame %s: predicted rotation is not orthonormal (|R R^T - I| > 1e-3)", f.key)
    K = intrinsics_to_original(pred.intrinsics[i].double().cpu().numpy(), f.crop)
    write_depth(layout.depth(f.key), depth, conf, valid, extr, K, {"frame_key": f.key, "frame_index": f.index})
    save_png(layout.depth_png(f.key), depth_picture(depth.numpy(), conf.numpy()))
    if not (np.isfinite(K).all() and np.isfinite(extr).all() and K[0, 0] > 0 and K[1, 1] > 0):
        # e.g. a random backbone whose camera head predicts a field of view of 0 (infinite focal length): the
        # points would collapse onto a line; keep the frame's depth, write no points, say so
        log.warning("frame %s: the predicted camera is degenerate (focal %s, %s): no point cloud for it", f.key,
                    K[0, 0], K[1, 1])
        empty = np.zeros((0, 3))
        write_ply(layout.points(f.key), empty.astype(np.float32), empty.astype(np.uint8),
                  extra={"confidence": np.zeros(0, dtype=np.float32)}, comment=f"frame {f.key}: degenerate camera")
        return
    pts = frame_points(depth.numpy(), conf.numpy(), K, extr, f.rgb, valid=valid.numpy(),
                       percentile=s.conf_percentile, min_conf=s.min_conf, stride=s.point_stride)
    write_ply(layout.points(f.key), pts["xyz"], pts["rgb"], extra={"confidence": pts["conf"]},
              comment=f"frame {f.key} world points (first camera frame), confidence-filtered")


def write_cameras(layout: OutputLayout, keys: list[str]) -> Path:
    """Assemble geometry/cameras.json from the per-frame depth files (works after a resume)."""
    frames = []
    for idx, key in enumerate(keys):
        p = layout.depth(key)
        if not p.exists():
            continue
        d, meta = read_depth(p, names=("extrinsics", "intrinsics", "valid"))
        frames.append(camera_record(key, meta.get("frame_index", idx), d["extrinsics"].numpy(),
                                    d["intrinsics"].numpy(), tuple(d["valid"].shape)))
    save_json_atomic({"convention": CAMERA_CONVENTION, "frames": frames}, layout.cameras)
    return layout.cameras


def write_fused(layout: OutputLayout, keys: list[str], max_points: int, seed: int = 0,
                colors: Callable[[str, dict], np.ndarray] | None = None, path: Path | None = None) -> int:
    """Concatenate the per-frame PLYs into one fused PLY, streaming, at most ``max_points`` vertices.

    Each frame contributes up to ``max_points / n_frames`` randomly chosen points (seeded), so
    memory stays at one frame's points. ``colors(key, ply) -> (N, 3) uint8`` recolours (e.g. by relevancy).
    Returns the fused vertex count.
    """
    present = [k for k in keys if layout.points(k).exists()]
    if not present:
        return 0
    per_frame = max(1, max_points // len(present))
    rng = np.random.default_rng(seed)
    with PlyStreamWriter(path or layout.fused, extra_names=("confidence",),
                         comment=f"fused from {len(present)} frames") as w:
        for key in present:
            ply = read_ply(layout.points(key))
            rgb = colors(key, ply) if colors is not None else ply["rgb"]
            n = len(ply["xyz"])
            sel = np.sort(rng.choice(n, per_frame, replace=False)) if n > per_frame else slice(None)
            w.add(ply["xyz"][sel], rgb[sel], extra={"confidence": ply["confidence"][sel]})
        count = w.count
    return count


def write_videos(layout: OutputLayout, keys: list[str], s: InferenceSettings) -> list[Path]:
    """mp4s of the RGB reconstruction and each level's PCA pictures (read back from the PNGs)."""
    sources = []
    if s.rgb:
        sources.append(("rgb", layout.rgb))
    if s.pca:
        sources += [(f"pca_{lvl}", lambda k, lvl=lvl: layout.pca(lvl, k)) for lvl in s.levels]
    written = []
    for name, path_of in sources:
        with Mp4Writer(layout.video(name), fps=s.fps) as w:
            for key in keys:
                if path_of(key).exists():
                    w.write(load_png(path_of(key)))
        if w.frames:
            written.append(layout.video(name))
    return written
