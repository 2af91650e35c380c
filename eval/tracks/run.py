"""``python -m eval.tracks``: score point tracks (TAP-Vid), dense flow (end-point error) and moving masks (IoU)
against ground truth, each beside its baselines (zero motion, and the ground truth itself, which scores 100).

    python -m eval.tracks --gt scene/gt/tracks.npz --pred pred.npz --query-mode first --json tracks.json
    python -m eval.tracks --gt-flow scene/gt/flow.npz --pred-flow flow.npz --gt-masks scene/gt/moving.npz \
        --pred-masks moving.npz --json motion.json

Files (``.npz``, never pickled):
  --gt / --pred          TAP-Vid tracks (inference/tracking/format.py): query_points (N,3) [t,y,x], tracks (N,T,2)
                         [x,y] pixels, occluded (N,T) bool; the queries and image_size [H,W] come from --gt (no
                         image_size and no --image-size: positions are scored as given, i.e. taken to be in the
                         256x256 raster already); the prediction's query_points, if it has them, must be the same.
                         With tracks_camera (N,T,3) in both (camera-frame points, z = depth), TAPVid-3D's metrics
                         (APD) are added: median scale alignment, depth-adaptive thresholds (eval/tracks/apd3d.py).
  --gt-flow / --pred-flow  flow (F,H,W,2) [dx,dy] pixels from frame f to f+1; the ground truth may hold occluded
                         (F,H,W) bool (pixels not visible in frame f+1) for the non-occluded EPE.
  --gt-masks / --pred-masks  masks (T,H,W) bool (or uint8, nonzero = moving); a prediction may hold prob (T,H,W).

The JSON holds, for tracks, the prediction's metrics at the top level under the published names
(``occlusion_accuracy``, ``pts_within_1`` .. ``pts_within_16``, ``jaccard_1`` .. ``jaccard_16``,
``average_jaccard``, ``average_pts_within_thresh``: fractions in [0, 1], ``null`` where undefined) and every
result again per method under ``tracks``, ``tracks_3d``, ``flow``, ``moving_masks``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.tracks.apd3d import SCALINGS, apd3d
from eval.tracks.motion import flow_epe, mask_ious, mean_iou
from eval.tracks.tapvid import QUERY_MODES, query_frames, tapvid_metrics, to_256, zero_motion
from inference.tracking.format import read_tracks
from utils.cli import UserError, add_logging_args, cli_main, setup_logging_from
from utils.io import save_json_atomic

logger = logging.getLogger(__name__)


def _image_size(gt: dict[str, np.ndarray], override: Sequence[int] | None, path: str) -> tuple[int, int]:
    """[H, W] of the tracks' pixels: --image-size, else the ground truth's image_size, else 256 x 256 (positions
    scored as given, as the published function does: they are taken to be in TAP-Vid's raster already)."""
    if override:
        return int(override[0]), int(override[1])
    if "image_size" not in gt:
        logger.warning("%s has no image_size: positions are scored as given, as if already in the 256x256 raster "
                       "(pass --image-size H W to rescale)", path)
        return 256, 256
    h, w = (int(v) for v in np.asarray(gt["image_size"]).reshape(-1))
    return h, w


def _focal(gt: dict[str, np.ndarray], override: Sequence[float] | None, path: str) -> tuple[float, float]:
    """(fx, fy) for the 3D thresholds: --focal, else the ground truth's ``intrinsics`` ([fx, fy, cx, cy] or a
    3x3 matrix, or one per frame: the first is used)."""
    if override:
        return float(override[0]), float(override[1])
    if "intrinsics" not in gt:
        raise UserError("3D tracks need the focal length, and the ground truth has no intrinsics", path,
                        "pass --focal FX FY")
    k = np.asarray(gt["intrinsics"], np.float64)
    if k.shape[-2:] == (3, 3):
        k = k.reshape(-1, 3, 3)[0]
        return float(k[0, 0]), float(k[1, 1])
    k = k.reshape(-1, 4)[0]
    return float(k[0]), float(k[1])


def score_tracks(gt: dict[str, np.ndarray], pred: dict[str, np.ndarray], image_size: tuple[int, int],
                 query_mode: str) -> dict[str, dict[str, float]]:
    """TAP-Vid metrics of ``pred`` and of the two baselines, positions scaled to 256 x 256."""
    q, n_frames = gt["query_points"], gt["tracks"].shape[1]
    gt_xy = to_256(gt["tracks"], image_size)
    zero_xy, zero_occ = zero_motion(q, n_frames)
    runs = {"prediction": (pred["tracks"], pred["occluded"]), "zero_motion": (zero_xy, zero_occ),
            "ground_truth": (gt["tracks"], gt["occluded"])}
    return {name: tapvid_metrics(q, gt["occluded"], gt_xy, occ, to_256(xy, image_size), query_mode)
            for name, (xy, occ) in runs.items()}


def check_pair(gt: dict[str, np.ndarray], pred: dict[str, np.ndarray], gt_path: str, pred_path: str) -> None:
    """Refuse a prediction made for other queries or another number of frames."""
    if pred["tracks"].shape != gt["tracks"].shape:
        raise UserError(f"prediction tracks {pred['tracks'].shape} but ground truth {gt['tracks'].shape}", pred_path,
                        f"track the queries of {gt_path} over all its frames")
    if not np.allclose(pred["query_points"], gt["query_points"], atol=1e-3, rtol=0):
        raise UserError("the prediction's query_points differ from the ground truth's", pred_path,
                        f"track the queries of {gt_path} (--queries {gt_path})")
    qf = query_frames(gt["query_points"])
    n_frames = gt["tracks"].shape[1]
    if qf.size and ((qf < 0) | (qf >= n_frames)).any():
        raise UserError(f"query frames {qf.min()}..{qf.max()} outside the video's {n_frames} frames", gt_path,
                        "fix the ground truth's query_points")


def _load_npz(path: str, key: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise UserError("file not found", p, "check the path")
    try:
        with np.load(p, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"not a readable plain .npz ({e})", p, "write it with numpy.savez") from None
    if key not in out:
        raise UserError(f"no {key!r} key (keys: {sorted(out)})", p, f"store the array under {key!r}")
    return out


def score_flow(gt_path: str, pred_path: str) -> dict[str, dict[str, float]]:
    gt, pred = _load_npz(gt_path, "flow"), _load_npz(pred_path, "flow")
    g, f = gt["flow"], pred["flow"]
    if g.shape != f.shape or g.ndim != 4 or g.shape[-1] != 2:
        raise UserError(f"flow shapes differ or are not (F,H,W,2): {f.shape} vs {g.shape}", pred_path,
                        "compute the flow on the ground truth's frames")
    occ = gt.get("occluded")
    if occ is not None and occ.shape != g.shape[:3]:
        raise UserError(f"occluded must be {g.shape[:3]}, not {occ.shape}", gt_path, "fix the file")
    return {"prediction": flow_epe(f, g, occ), "zero_motion": flow_epe(np.zeros_like(g), g, occ),
            "ground_truth": flow_epe(g, g, occ)}


def score_masks(gt_path: str, pred_path: str) -> dict[str, Any]:
    gt, pred = _load_npz(gt_path, "masks")["masks"] != 0, _load_npz(pred_path, "masks")["masks"] != 0
    if gt.ndim == 3 and pred.ndim == 3 and len(pred) == len(gt) + 1 and gt.shape[1:] == pred.shape[1:]:
        # ground truth defined from frame t to t + 1 (the synthetic world's gt/motion: none for the last frame):
        # the prediction's first T - 1 frames are the ones with an answer
        pred = pred[:-1]
    if gt.shape != pred.shape or gt.ndim != 3:
        raise UserError(f"mask shapes differ or are not (T,H,W): {pred.shape} vs {gt.shape}", pred_path,
                        "compute the masks on the ground truth's frames")
    out: dict[str, Any] = {}
    for name, m in (("prediction", pred), ("all_static", np.zeros_like(gt)), ("all_moving", np.ones_like(gt)),
                    ("ground_truth", gt)):
        per = mask_ious(m, gt)
        out[name] = {"mask_iou": mean_iou(per), "per_frame": per}
    return out


SHORT = {"average_jaccard": "AJ", "average_pts_within_thresh": "delta_avg", "occlusion_accuracy": "OA",
         "apd_3d": "APD", "epe_all": "EPE all", "epe_noc": "EPE noc", "mask_iou": "IoU"}


def _table(title: str, rows: dict[str, dict[str, Any]], keys: Sequence[str], scale: float) -> str:
    head = f"{title:<14}" + "".join(f"{SHORT.get(k, k):>12}" for k in keys)
    lines = [head]
    for name, m in rows.items():
        cells = []
        for k in keys:
            v = m.get(k)
            cells.append(f"{'n/a':>12}" if v is None or not np.isfinite(v) else f"{v * scale:>12.2f}")
        lines.append(f"{name:<14}" + "".join(cells))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.tracks", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", default=None, help="ground-truth tracks npz (TAP-Vid keys; e.g. <scene>/gt/tracks.npz)")
    p.add_argument("--pred", default=None, help="predicted tracks npz (same keys; python -m inference.track writes it)")
    p.add_argument("--query-mode", choices=QUERY_MODES, default="first",
                   help="'first': score only the frames after each query frame; 'strided': every frame but the "
                        "query frame (TAP-Vid's two protocols; default first)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="frame size of the tracks' pixels (overrides the ground truth's image_size; without either, "
                        "positions are scored as given)")
    p.add_argument("--focal", type=float, nargs=2, metavar=("FX", "FY"), default=None,
                   help="focal lengths (pixels) for the 3D thresholds when the ground truth has no intrinsics")
    p.add_argument("--scaling-3d", choices=SCALINGS, default="median",
                   help="3D scale alignment: 'median' (TAPVid-3D's default, for predictions up to scale) or 'none'")
    p.add_argument("--gt-flow", default=None, help="ground-truth forward flow npz: flow (F,H,W,2) [+ occluded]")
    p.add_argument("--pred-flow", default=None, help="predicted forward flow npz: flow (F,H,W,2)")
    p.add_argument("--gt-masks", default=None, help="ground-truth moving masks npz: masks (T,H,W)")
    p.add_argument("--pred-masks", default=None, help="predicted moving masks npz: masks (T,H,W)")
    p.add_argument("--json", default=None, help="write every result here (valid JSON, undefined values null)")
    add_logging_args(p)
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    setup_logging_from(args)
    pairs = [("--gt", args.gt, "--pred", args.pred), ("--gt-flow", args.gt_flow, "--pred-flow", args.pred_flow),
             ("--gt-masks", args.gt_masks, "--pred-masks", args.pred_masks)]
    for a, va, b, vb in pairs:
        if (va is None) != (vb is None):
            raise UserError(f"{a} and {b} go together", None, f"pass both {a} and {b}")
    if all(va is None for _, va, _, _ in pairs):
        raise UserError("nothing to score", None, "pass --gt/--pred, --gt-flow/--pred-flow or --gt-masks/--pred-masks")
    result: dict[str, Any] = {}
    printed: list[str] = []
    if args.gt:
        gt = read_tracks(args.gt)
        pred = read_tracks(args.pred, queries=gt["query_points"])  # a prediction may omit the queries
        check_pair(gt, pred, args.gt, args.pred)
        size = _image_size(gt, args.image_size, args.gt)
        scores = score_tracks(gt, pred, size, args.query_mode)
        result.update(scores["prediction"])
        result.update({"query_mode": args.query_mode, "image_size": list(size), "raster": 256,
                       "num_points": int(gt["tracks"].shape[0]), "num_frames": int(gt["tracks"].shape[1]),
                       "tracks": scores})
        printed.append(_table("tracks (x100)", scores, ("average_jaccard", "average_pts_within_thresh",
                                                        "occlusion_accuracy"), 100.0))
        focal = None
        if "tracks_camera" in gt and "tracks_camera" in pred:
            try:
                focal = _focal(gt, args.focal, args.gt)
            except UserError as e:
                logger.warning("no 3D metrics: %s", e)
        if focal is not None:
            # zero motion in 3D: each point keeps its ground-truth camera-frame position of its query frame
            at_query = gt["tracks_camera"][np.arange(len(gt["tracks"])), query_frames(gt["query_points"])]
            zero_c = np.repeat(at_query[:, None], gt["tracks"].shape[1], axis=1)
            zero_occ = np.zeros(gt["occluded"].shape, bool)
            result["tracks_3d"] = {"scaling": args.scaling_3d, "focal": list(focal)}
            for name, c, occ in (("prediction", pred["tracks_camera"], pred["occluded"]),
                                 ("zero_motion", zero_c, zero_occ),
                                 ("ground_truth", gt["tracks_camera"], gt["occluded"])):
                result["tracks_3d"][name] = apd3d(gt["tracks_camera"], c, gt["occluded"], occ, focal,
                                                  args.scaling_3d)
            printed.append(_table("3D (x100)", {k: v for k, v in result["tracks_3d"].items() if isinstance(v, dict)},
                                  ("apd_3d", "average_jaccard"), 100.0))
    if args.gt_flow:
        result["flow"] = score_flow(args.gt_flow, args.pred_flow)
        printed.append(_table("flow EPE (px)", result["flow"], ("epe_all", "epe_noc"), 1.0))
    if args.gt_masks:
        result["moving_masks"] = score_masks(args.gt_masks, args.pred_masks)
        printed.append(_table("moving IoU", result["moving_masks"], ("mask_iou",), 100.0))
    if not args.quiet:
        for block in printed:
            print(block)
    if args.json:
        save_json_atomic(result, args.json)
        logger.info("wrote %s", args.json)
    return result

