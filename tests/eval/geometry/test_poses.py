"""Camera conventions and evo's ATE / RPE on trajectories with known answers (eval/geometry/poses.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from eval.geometry.poses import (
    c2w_from_cam_from_world,
    c2w_from_hypernerf,
    c2w_from_tum,
    identity_baseline,
    pose_metrics,
    tum_from_c2w,
)
from tests.eval.geometry.helpers import sim3, trajectory


def test_tum_quaternion_is_x_y_z_w_camera_to_world():
    h = math.sqrt(0.5)
    c2w = c2w_from_tum([[1.0, 2.0, 3.0]], [[0.0, 0.0, h, h]])[0]  # 90 degrees about z, scalar last
    assert np.allclose(c2w[:3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    assert np.allclose(c2w[:3, 3], [1, 2, 3]) and np.allclose(c2w[3], [0, 0, 0, 1])
    xyz, q = tum_from_c2w(c2w[None])
    assert np.allclose(xyz, [[1, 2, 3]]) and np.allclose(np.abs(q), [[0, 0, h, h]])


def test_camera_from_world_inverts_to_camera_to_world():
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    t = np.array([1.0, 0.0, 2.0])
    c2w = c2w_from_cam_from_world(np.concatenate([R, t[:, None]], 1)[None])[0]
    centre = -R.T @ t  # the camera centre: X_cam = R X + t = 0
    assert np.allclose(c2w[:3, 3], centre) and np.allclose(c2w[:3, :3], R.T)
    X = np.array([0.3, -2.0, 5.0])
    assert np.allclose(c2w[:3, :3] @ (R @ X + t) + c2w[:3, 3], X)  # camera point back to the world


def test_hypernerf_orientation_is_camera_from_world_and_position_the_centre():
    R = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    c = np.array([0.5, -1.0, 2.0])
    c2w = c2w_from_hypernerf(R.tolist(), c.tolist())
    assert np.allclose(c2w[:3, 3], c) and np.allclose(c2w[:3, :3], R.T)
    X = np.array([1.0, 1.0, 1.0])
    local = R @ (X - c)  # the HyperNeRF projection's camera-frame point
    assert np.allclose(c2w[:3, :3] @ local + c2w[:3, 3], X)


def test_sim3_transformed_trajectory_has_zero_ate_and_rpe():
    gt = trajectory(15)
    est = sim3(gt, 3.7, Rotation.from_rotvec([0.4, -1.0, 0.2]).as_matrix(), np.array([5.0, -2.0, 1.0]))
    m = pose_metrics(gt, est)
    assert m["ate"] < 1e-9 and m["rpe_trans"] < 1e-9 and m["rpe_rot"] < 1e-6  # measured ~1e-15 (float64)


def test_a_known_rotation_per_step_gives_the_expected_rpe():
    n, theta = 12, 2.0
    gt = np.tile(np.eye(4), (n, 1, 1))
    rng = np.random.default_rng(3)
    gt[:, :3, 3] = np.cumsum(rng.normal(size=(n, 3)), axis=0)
    est = gt.copy()
    est[:, :3, :3] = Rotation.from_euler("z", np.arange(n)[:, None] * theta, degrees=True).as_matrix()
    m = pose_metrics(gt, est)
    # same positions: the Sim(3) alignment is the identity, ATE 0
    assert m["ate"] < 1e-9
    # relative error of step i: rotation Rz(theta) (angle theta), translation Rz(-i theta) d_i - d_i
    assert m["rpe_rot"] == pytest.approx(theta, rel=1e-9)
    d = np.diff(gt[:, :3, 3], axis=0)
    errs = [np.linalg.norm(Rotation.from_euler("z", -i * theta, degrees=True).as_matrix() @ d[i] - d[i])
            for i in range(n - 1)]
    assert m["rpe_trans"] == pytest.approx(math.sqrt(np.mean(np.square(errs))), rel=1e-6)


def test_identity_trajectory_baseline_and_degenerate_estimate():
    gt = trajectory(10, seed=4)
    base = identity_baseline(gt)
    pos = gt[:, :3, 3]
    assert base["ate"] == pytest.approx(math.sqrt(np.mean(np.sum((pos - pos.mean(0)) ** 2, 1))), rel=1e-9)
    rel = [np.linalg.inv(gt[i]) @ gt[i + 1] for i in range(9)]
    angles = [np.degrees(Rotation.from_matrix(r[:3, :3]).magnitude()) for r in rel]
    assert base["rpe_rot"] == pytest.approx(math.sqrt(np.mean(np.square(angles))), rel=1e-6)
    assert base["rpe_trans"] == pytest.approx(math.sqrt(np.mean([np.sum(r[:3, 3] ** 2) for r in rel])), rel=1e-9)
    m = pose_metrics(gt, np.tile(np.eye(4), (10, 1, 1)))  # a camera that never moves: no Sim(3) alignment
    assert m["ate"] is None and "Degenerate" in m["pose_note"]


def test_too_few_poses():
    assert pose_metrics(trajectory(2), trajectory(2))["ate"] is None
    with pytest.raises(ValueError):
        pose_metrics(trajectory(3), trajectory(4))
