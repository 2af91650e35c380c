"""Language-driven tracking: follow what a text query found through the whole video (``eval.query --track``).

For each query, after its masks are written (``<qout>/<query>/mask/<key>.png``):

1. the **query frame** is the frame where the query is most confident (the highest relevancy score among frames
   whose mask is not empty; ``--track-frame`` picks another);
2. up to ``--track-points`` points are sampled inside the mask on that frame, 4 px away from its border (pixel
   centres on a regular lattice over the mask, so the choice is deterministic and spread over the object);
3. they are tracked forwards and backwards through the whole video with the weight-free tracker
   (:mod:`inference.tracking.lk`) on the original frames (or the RGB reconstructions when the source is gone), and
   lifted to world coordinates with the output's depth and cameras when they exist;
4. the **motion timeline**: per frame, the fraction of the query's mask that moves on its own
   (:mod:`inference.tracking.motion`: flow against the camera's motion, geometry when present, else a homography);
   the object moves in frames where that fraction exceeds ``moving_fraction`` (0.25).

Files::

    <qout>/tracks/<query>.npz          query_points, tracks (N,T,2), occluded, confidence, image_size, query_frame
                                       (the frame index), keys, [tracks_world, tracks_camera (N,T,3)]
    <qout>/<query>/trails/<key>.png    the frame with each visible point (yellow dot) and its trail over the
                                       last frames (colour per point)
    <qout>/<query>/timeline.json       per frame: key, mask area, moving fraction, moving; moving intervals
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from inference.outputs import OutputLayout
from inference.tracking.format import write_tracks
from inference.tracking.lift import lift_tracks
from inference.tracking.lk import LKParams, to_gray, track_lk
from inference.tracking.motion import MotionParams, homography_flow, moving_probability
from inference.tracking.store import frame_store
from inference.visualize import load_png
from utils.cli import UserError
from utils.io import atomic_path, save_json_atomic

log = logging.getLogger("eval.query")

DOT = (255, 255, 0)  # yellow: the current position of a visible point
MOVING_FRACTION = 0.25


def sample_mask_points(mask: np.ndarray, n: int, margin: int = 4) -> np.ndarray:
    """Up to ``n`` pixel centres (M, 2) [x, y] (+0.5 convention) inside a bool (H, W) mask, on the coarsest regular
    lattice that still gives n points (all mask pixels when it has fewer). The mask is first eroded by ``margin``
    pixels (less when that would empty it): a query mask's border is uncertain, and a point on an object's edge
    is tracked with a window half on the background."""
    mask = np.asarray(mask, bool)
    for m in range(margin, 0, -1):
        eroded = cv2.erode(mask.astype(np.uint8), np.ones((2 * m + 1, 2 * m + 1), np.uint8)) > 0
        if eroded.any():
            mask = eroded
            break
    ys, xs = np.nonzero(mask)
    if len(ys) <= n:
        return np.stack([xs + 0.5, ys + 0.5], 1).astype(np.float64)
    step = max(1, int(np.sqrt(len(ys) / n)))
    while step > 1 and np.count_nonzero((ys % step == 0) & (xs % step == 0)) < n:
        step -= 1
    keep = np.flatnonzero((ys % step == 0) & (xs % step == 0))
    keep = keep[np.linspace(0, len(keep) - 1, n).round().astype(int)] if len(keep) > n else keep
    return np.stack([xs[keep] + 0.5, ys[keep] + 0.5], 1).astype(np.float64)


def draw_trails(rgb: np.ndarray, tracks: np.ndarray, occluded: np.ndarray, frame: int, length: int = 10
                ) -> np.ndarray:
    """The frame with each point's trail over its last ``length`` visible positions and a yellow dot where it is
    now (visible points only). tracks (N, T, 2) [x, y] (+0.5 convention)."""
    img = np.ascontiguousarray(np.asarray(rgb, np.uint8).copy())
    colours = cv2.applyColorMap(np.linspace(0, 255, max(len(tracks), 1)).astype(np.uint8)[:, None],
                                cv2.COLORMAP_HSV)[:, 0, ::-1]
    start = max(0, frame - length)
    for i in range(len(tracks)):
        seg = [tracks[i, f] - 0.5 for f in range(start, frame + 1) if not occluded[i, f]]
        if len(seg) >= 2:
            pts = np.round(np.array(seg) * 4).astype(np.int32).reshape(-1, 1, 2)  # 2 fractional bits
            cv2.polylines(img, [pts], False, tuple(int(c) for c in colours[i]), 1, cv2.LINE_AA, shift=2)
    for i in range(len(tracks)):
        if not occluded[i, frame]:
            x, y = np.round(tracks[i, frame] - 0.5).astype(int)
            cv2.circle(img, (int(x), int(y)), 2, DOT, -1)
    return img


def _intervals(flags: Sequence[bool]) -> list[list[int]]:
    """Inclusive [first, last] frame-index runs where ``flags`` is true."""
    runs, start = [], None
    for i, f in enumerate(list(flags) + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append([start, i - 1])
            start = None
    return runs


def _save_png(path: Path, rgb: np.ndarray) -> None:
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    with atomic_path(path) as tmp:
        tmp.write_bytes(png.tobytes())


def track_query(layout: OutputLayout, folder: Path, tracks_path: Path, text: str, keys: Sequence[str],
                frames: dict, images, n_points: int = 64, frame: str | int | None = None, trail: int = 10,
                gray_cache: dict | None = None) -> dict:
    """Track one query (module docstring). ``frames``: the query's summary per key (``score``, ``area``);
    ``images(key, hw)`` the background frames. Returns the timeline dict (also written)."""
    masks = [load_png(folder / "mask" / f"{k}.png") > 127 for k in keys]
    hw = masks[0].shape[:2]
    if frame is None:
        scored = [(frames[k]["score"], -i) for i, k in enumerate(keys) if frames[k]["area"] > 0]
        if not scored:
            raise UserError(f"the query {text!r} has an empty mask in every frame: nothing to track", folder,
                            "try another wording, --threshold or --level")
        qi = -max(scored)[1]
    else:
        try:
            qi = keys.index(frame) if isinstance(frame, str) and frame in keys else int(frame)
        except ValueError:
            qi = -1
        if not 0 <= qi < len(keys):
            raise UserError(f"--track-frame {frame} is not a frame of the output ({len(keys)} frames)", layout.root,
                            "give a frame key or an index in [0, T)")
        if not masks[qi].any():
            raise UserError(f"the query {text!r} has an empty mask on frame {keys[qi]}", folder,
                            "choose another --track-frame")
    xy = sample_mask_points(masks[qi], n_points)
    queries = np.concatenate([np.full((len(xy), 1), float(qi)), xy[:, [1, 0]]], axis=1)
    if gray_cache is not None and "gray" in gray_cache:
        gray = gray_cache["gray"]
    else:  # grey frames only (T x H x W bytes, disk-backed for long videos); pictures are read again when drawn
        gray = frame_store(len(keys), hw)
        for f, k in enumerate(keys):
            gray[f] = to_gray([images(k, hw)])[0]
        if gray_cache is not None:
            gray_cache["gray"] = gray
    res = track_lk(gray, queries, LKParams(), progress=False)
    out = {"query_points": queries, **res, "image_size": np.array(hw), "query_frame": np.array(qi),
           "keys": np.array(list(keys))}
    depth_files = [layout.depth(k) for k in keys]
    if all(p.exists() for p in depth_files):
        out.update(lift_tracks(res["tracks"], depth_files, hw))
    write_tracks(tracks_path, out)
    for f, k in enumerate(keys):
        _save_png(folder / "trails" / f"{k}.png", draw_trails(images(k, hw), res["tracks"], res["occluded"], f, trail))
    # motion timeline: the share of the query's mask that moves on its own in each frame
    if gray_cache is not None and "moving" in gray_cache:
        moving = gray_cache["moving"]
    else:
        moving = _moving(layout, keys, gray)
        if gray_cache is not None:
            gray_cache["moving"] = moving
    rows = []
    for f, k in enumerate(keys):
        area = int(masks[f].sum())
        frac = float(moving[f][masks[f]].mean()) if area else 0.0
        rows.append({"key": k, "index": f, "mask_area": area, "moving_fraction": frac,
                     "moving": bool(area and frac > MOVING_FRACTION)})
    timeline = {"query": text, "query_frame": keys[qi], "points": len(xy), "moving_fraction": MOVING_FRACTION,
                "moving_intervals": _intervals([r["moving"] for r in rows]), "frames": rows}
    save_json_atomic(timeline, folder / "timeline.json")
    return timeline


def _moving(layout: OutputLayout, keys: Sequence[str], gray: np.ndarray) -> np.ndarray:
    """(T, H, W) bool moving masks of the output's frames (geometry when every frame has it)."""
    from inference.tracking.flow import DenseFlow
    from inference.tracking.motion import geometry_flow

    depth_files = [layout.depth(k) for k in keys]
    use_geometry = all(p.exists() for p in depth_files)
    params, dis = MotionParams(), DenseFlow()
    out = np.zeros(gray.shape, bool)
    if len(gray) < 2:
        return out
    from inference.outputs import read_depth

    for f in range(len(gray)):
        other = f + 1 if f + 1 < len(gray) else f - 1
        flow = dis(gray[f], gray[other])
        if use_geometry:
            d0, _ = read_depth(depth_files[f], names=("depth", "extrinsics", "intrinsics"))
            d1, _ = read_depth(depth_files[other], names=("extrinsics", "intrinsics"))
            cam = geometry_flow(d0["depth"].numpy(), d0["intrinsics"].numpy(), d0["extrinsics"].numpy(),
                                d1["intrinsics"].numpy(), d1["extrinsics"].numpy())
            if cam.shape != flow.shape:
                cam = homography_flow(flow, params)
        else:
            cam = homography_flow(flow, params)
        out[f] = moving_probability(flow, cam, params) > params.threshold
    return out


def format_timeline(timeline: dict) -> str:
    """One line per query: where it was tracked from and the frames where it moves."""
    runs = timeline["moving_intervals"]
    keys = [r["key"] for r in timeline["frames"]]
    where = ", ".join(f"{keys[a]}-{keys[b]}" if a != b else keys[a] for a, b in runs) or "never"
    return (f"{timeline['query']}: {timeline['points']} points tracked from frame {timeline['query_frame']}; "
            f"moves in frames {where}")
