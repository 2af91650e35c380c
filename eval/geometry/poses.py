"""Camera conventions and trajectory metrics (ATE, RPE) computed with ``evo``, as the field's scripts do.

Conventions, converted explicitly here and nowhere else:

* our outputs and the synthetic ground truth store **camera-from-world** 3x4 ``[R | t]`` (``X_cam = R X_world + t``,
  OpenCV axes: x right, y down, z forward); Sintel ``.cam`` files store the same (world-to-camera);
* HyperNeRF ``camera/*.json`` stores ``orientation`` (the camera-from-world rotation, rows = camera axes) and
  ``position`` (the camera centre in the world), OpenCV axes: camera-from-world = ``[R | −R c]``;
* TUM / Bonn ``groundtruth.txt`` stores **camera-to-world** ``tx ty tz qx qy qz qw`` (quaternion x y z w, scalar last);
* ``evo`` takes camera-to-world 4x4 poses (``PosePath3D(poses_se3=...)``; its quaternions are w x y z).

Metrics (``evo`` 1.38): ATE = APE on the translation part after Umeyama Sim(3) alignment (``align=True,
correct_scale=True``), RMSE; RPE translation / rotation (degrees) = RPE with ``delta = 1`` frame
(``Unit.frames``, ``rel_delta_tol = 0.01``, ``all_pairs=True``), the same Sim(3) alignment, RMSE.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
from scipy.spatial.transform import Rotation

from inference.geometry import invert_extrinsics

logger = logging.getLogger(__name__)
POSE_KEYS = ("ate", "rpe_trans", "rpe_rot")


def to_homogeneous(m: np.ndarray) -> np.ndarray:
    """(..., 3, 4) -> (..., 4, 4) float64 with the row ``[0, 0, 0, 1]``."""
    m = np.asarray(m, dtype=np.float64)
    out = np.zeros(m.shape[:-2] + (4, 4))
    out[..., :3, :4] = m[..., :3, :4]
    out[..., 3, 3] = 1.0
    return out


def c2w_from_cam_from_world(extr: np.ndarray) -> np.ndarray:
    """(N, 3, 4) camera-from-world (ours, Sintel) -> (N, 4, 4) camera-to-world."""
    return to_homogeneous(invert_extrinsics(np.asarray(extr, dtype=np.float64)))


def c2w_from_tum(xyz: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    """TUM rows (position (N, 3), quaternion x y z w (N, 4), camera-to-world) -> (N, 4, 4) camera-to-world."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    out = np.tile(np.eye(4), (len(xyz), 1, 1))
    out[:, :3, :3] = Rotation.from_quat(np.asarray(quat_xyzw, dtype=np.float64).reshape(-1, 4)).as_matrix()
    out[:, :3, 3] = xyz
    return out


def tum_from_c2w(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4, 4) camera-to-world -> (positions (N, 3), quaternions x y z w (N, 4)), the TUM row order."""
    c2w = np.asarray(c2w, dtype=np.float64)
    return c2w[:, :3, 3].copy(), Rotation.from_matrix(c2w[:, :3, :3]).as_quat()


def c2w_from_hypernerf(orientation: np.ndarray, position: np.ndarray) -> np.ndarray:
    """HyperNeRF camera (``orientation`` 3x3 camera-from-world rotation, ``position`` camera centre) -> 4x4
    camera-to-world ``[Rᵀ | c]``."""
    R = np.asarray(orientation, dtype=np.float64).reshape(3, 3)
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = np.asarray(position, dtype=np.float64).reshape(3)
    return out


def _path(c2w: np.ndarray):
    from evo.core.trajectory import PoseTrajectory3D

    c2w = np.asarray(c2w, dtype=np.float64)
    return PoseTrajectory3D(poses_se3=list(c2w), timestamps=np.arange(len(c2w), dtype=np.float64))


def _quiet_evo() -> None:
    logging.getLogger("evo").setLevel(logging.WARNING)  # evo logs every result table at INFO


def pose_metrics(gt_c2w: np.ndarray, est_c2w: np.ndarray) -> dict:
    """ATE / RPE (translation, rotation in degrees) of ``est`` against ``gt``, both (N, 4, 4) camera-to-world with
    frame i of one matching frame i of the other; N ≥ 3. Returns {ate, rpe_trans, rpe_rot} (+ ``pose_note`` and
    None values when ``evo``'s Sim(3) alignment is undefined, e.g. an estimate that never moves)."""
    from evo import main_ape, main_rpe
    from evo.core.geometry import GeometryException
    from evo.core.metrics import PoseRelation, Unit

    _quiet_evo()
    gt_c2w, est_c2w = np.asarray(gt_c2w, np.float64), np.asarray(est_c2w, np.float64)
    if gt_c2w.shape != est_c2w.shape or gt_c2w.ndim != 3 or gt_c2w.shape[1:] != (4, 4):
        raise ValueError(f"trajectories of shapes {gt_c2w.shape} and {est_c2w.shape}: need two (N, 4, 4)")
    if len(gt_c2w) < 3:
        return {**{k: None for k in POSE_KEYS}, "pose_note": f"{len(gt_c2w)} poses: a Sim(3) alignment needs 3"}
    ref = _path(gt_c2w)
    try:
        ate = main_ape.ape(copy.deepcopy(ref), _path(est_c2w), PoseRelation.translation_part,
                           align=True, correct_scale=True)
        rpe = {}
        for name, rel in (("rpe_trans", PoseRelation.translation_part), ("rpe_rot", PoseRelation.rotation_angle_deg)):
            rpe[name] = main_rpe.rpe(copy.deepcopy(ref), _path(est_c2w), rel, delta=1, delta_unit=Unit.frames,
                                     rel_delta_tol=0.01, all_pairs=True, align=True, correct_scale=True)
    except GeometryException as e:
        return {**{k: None for k in POSE_KEYS}, "pose_note": f"evo: {e}"}
    return {"ate": float(ate.stats["rmse"]), "rpe_trans": float(rpe["rpe_trans"].stats["rmse"]),
            "rpe_rot": float(rpe["rpe_rot"].stats["rmse"])}


def identity_baseline(gt_c2w: np.ndarray) -> dict:
    """The identity trajectory (a camera that never moves) as a trivial baseline.

    Its Sim(3) alignment is degenerate (Umeyama divides by the estimate's spread, 0 here); its limit is scale 0, which
    puts every estimated position at the ground truth's centroid, so ATE = ``evo`` APE of that constant trajectory
    without further alignment (the RMS distance of the ground-truth positions to their centroid). Relative poses of
    a constant trajectory are identities whatever the alignment, so RPE = ``evo`` RPE without alignment.
    """
    from evo import main_ape, main_rpe
    from evo.core.metrics import PoseRelation, Unit

    _quiet_evo()
    gt_c2w = np.asarray(gt_c2w, np.float64)
    if len(gt_c2w) < 2:
        return {k: None for k in POSE_KEYS}
    est = np.tile(np.eye(4), (len(gt_c2w), 1, 1))
    est[:, :3, 3] = gt_c2w[:, :3, 3].mean(axis=0)
    ate = main_ape.ape(_path(gt_c2w), _path(est), PoseRelation.translation_part)
    out = {"ate": float(ate.stats["rmse"])}
    for name, rel in (("rpe_trans", PoseRelation.translation_part), ("rpe_rot", PoseRelation.rotation_angle_deg)):
        r = main_rpe.rpe(_path(gt_c2w), _path(est), rel, delta=1, delta_unit=Unit.frames, rel_delta_tol=0.01,
                         all_pairs=True)
        out[name] = float(r.stats["rmse"])
    return out


def mean_pose_metrics(rows: list[dict]) -> dict:
    """Dataset figure for poses: the plain mean over sequences (as the published relpose script averages)."""
    out = {}
    for k in POSE_KEYS:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    return out
