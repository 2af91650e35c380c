"""Pose encoding (absT_quaR_FoV) conversions, quaternion <-> matrix, and depth unprojection helpers."""

from __future__ import annotations

import math

import torch

from model.streamvggt.geometry import (
    cam_to_world_points,
    depth_to_cam_points,
    depth_to_world_points,
    project_points,
    world_to_cam_points,
)
from model.streamvggt.pose import (
    closed_form_inverse_se3,
    extri_intri_to_pose_encoding,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
)


def random_quats(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=dtype), dim=-1)


def test_quat_to_mat_gives_rotations_and_known_values():
    R = quat_to_mat(random_quats(200))
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(200, dtype=R.dtype))
    # XYZW: identity is (0,0,0,1); 90 degrees about z is (0,0,sin45,cos45) and maps x -> y.
    torch.testing.assert_close(quat_to_mat(torch.tensor([0.0, 0, 0, 1])), torch.eye(3))
    s = math.sqrt(0.5)
    Rz = quat_to_mat(torch.tensor([0.0, 0, s, s]))
    torch.testing.assert_close(Rz @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6, rtol=0)
    # Non-unit quaternions give the same rotation.
    q = random_quats(10)
    torch.testing.assert_close(quat_to_mat(3.7 * q), quat_to_mat(q))


def test_mat_to_quat_round_trip_and_standardised():
    q = random_quats(500, seed=1)
    q_back = mat_to_quat(quat_to_mat(q))
    assert (q_back[:, 3] >= 0).all()
    torch.testing.assert_close(q_back, torch.where(q[:, 3:4] < 0, -q, q), atol=1e-9, rtol=0)
    # Near-180-degree rotations (w ~ 0) are where naive formulas break down.
    q180 = torch.nn.functional.normalize(torch.tensor([[1.0, 2.0, 3.0, 1e-7], [0.0, 0.0, 1.0, 0.0]],
                                                      dtype=torch.float64), dim=-1)
    torch.testing.assert_close(quat_to_mat(mat_to_quat(quat_to_mat(q180))), quat_to_mat(q180), atol=1e-9, rtol=0)
    # Batch shapes are kept.
    assert mat_to_quat(quat_to_mat(random_quats(6).reshape(2, 3, 4))).shape == (2, 3, 4)


def test_pose_encoding_round_trip():
    g = torch.Generator().manual_seed(2)
    B, S, H, W = 2, 5, 294, 518
    q = random_quats(B * S, seed=3).reshape(B, S, 4)
    t = torch.randn(B, S, 3, generator=g, dtype=torch.float64)
    fov = torch.rand(B, S, 2, generator=g, dtype=torch.float64) * 1.5 + 0.3
    enc = torch.cat([t, torch.where(q[..., 3:4] < 0, -q, q), fov], dim=-1)
    extr, intr = pose_encoding_to_extri_intri(enc, (H, W))
    assert extr.shape == (B, S, 3, 4) and intr.shape == (B, S, 3, 3)
    R = extr[..., :3]
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=R.dtype).expand_as(R), atol=1e-10, rtol=0)
    torch.testing.assert_close(extr[..., 3], t)
    # fy = (H/2)/tan(fov_h/2), fx = (W/2)/tan(fov_w/2), principal point at the centre.
    torch.testing.assert_close(intr[..., 1, 1], (H / 2) / torch.tan(fov[..., 0] / 2))
    torch.testing.assert_close(intr[..., 0, 0], (W / 2) / torch.tan(fov[..., 1] / 2))
    torch.testing.assert_close(intr[..., 0, 2], torch.full((B, S), W / 2, dtype=torch.float64))
    torch.testing.assert_close(intr[..., 1, 2], torch.full((B, S), H / 2, dtype=torch.float64))
    enc_back = extri_intri_to_pose_encoding(extr, intr, (H, W))
    torch.testing.assert_close(enc_back, enc, atol=1e-9, rtol=0)
    # And matrices -> encoding -> matrices.
    extr2, intr2 = pose_encoding_to_extri_intri(enc_back, (H, W))
    torch.testing.assert_close(extr2, extr, atol=1e-9, rtol=0)
    torch.testing.assert_close(intr2, intr, atol=1e-6, rtol=0)
    e_only, none = pose_encoding_to_extri_intri(enc, (H, W), build_intrinsics=False)
    assert none is None and torch.equal(e_only, extr)


def test_se3_inverse_and_unprojection_round_trip():
    g = torch.Generator().manual_seed(4)
    H, W = 6, 8
    R = quat_to_mat(random_quats(2, seed=5, dtype=torch.float32))
    t = torch.randn(2, 3, 1, generator=g)
    extr = torch.cat([R, t], dim=-1)  # (2, 3, 4) camera-from-world
    inv = closed_form_inverse_se3(extr)
    pt = torch.randn(2, 3, 1, generator=g)
    torch.testing.assert_close(inv[..., :3] @ (R @ pt + t) + inv[..., 3:], pt, atol=1e-5, rtol=0)
    enc = torch.cat([t[..., 0], mat_to_quat(R), torch.full((2, 2), 1.0)], dim=-1)
    _, intr = pose_encoding_to_extri_intri(enc, (H, W))
    depth = torch.rand(2, H, W, 1, generator=g) + 0.5
    cam = depth_to_cam_points(depth, intr)
    assert cam.shape == (2, H, W, 3)
    torch.testing.assert_close(cam[..., 2], depth[..., 0])
    # projecting camera points gives back the pixel grid
    uv = project_points(cam, intr)
    torch.testing.assert_close(uv[0, 2, 5], torch.tensor([5.0, 2.0]), atol=1e-4, rtol=0)
    world = depth_to_world_points(depth, extr, intr)
    torch.testing.assert_close(world, cam_to_world_points(cam, extr))
    torch.testing.assert_close(world_to_cam_points(world, extr), cam, atol=1e-5, rtol=0)
