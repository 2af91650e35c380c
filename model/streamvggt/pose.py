"""Camera pose encoding of StreamVGGT (``absT_quaR_FoV``) and quaternion <-> rotation-matrix conversions.

Encoding layout (..., 9): ``[t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_h, fov_w]``; the quaternion is scalar-last
(XYZW). Extrinsics ``[R(q) | t]`` (..., 3, 4) map world to camera (camera-from-world, OpenCV: x right, y down,
z forward); the world frame is the first frame's camera. Intrinsics (..., 3, 3) for an H x W image:
``fy = (H/2) / tan(fov_h/2)``, ``fx = (W/2) / tan(fov_w/2)``, principal point ``(W/2, H/2)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

POSE_ENCODING_TYPE = "absT_quaR_FoV"


def quat_to_mat(quaternions: torch.Tensor) -> torch.Tensor:
    """Quaternions (..., 4) XYZW -> rotation matrices (..., 3, 3). Need not be unit (uses 2/|q|^2)."""
    i, j, k, r = torch.unbind(quaternions, -1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)
    mat = torch.stack((
        1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
        two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
        two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
    ), -1)
    return mat.reshape(quaternions.shape[:-1] + (3, 3))


def _sqrt_positive(x: torch.Tensor) -> torch.Tensor:
    """sqrt(max(x, 0)) with a zero (not NaN) gradient at x <= 0."""
    out = torch.zeros_like(x)
    pos = x > 0
    out[pos] = torch.sqrt(x[pos])
    return out


def mat_to_quat(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) XYZW, standardised to w >= 0.

    Numerically stable: of the four candidate solutions the one with the largest denominator is used.
    """
    if matrix.shape[-2:] != (3, 3):
        raise ValueError(f"mat_to_quat expects (..., 3, 3) matrices, got {tuple(matrix.shape)}")
    batch = matrix.shape[:-2]
    m = matrix.reshape(batch + (9,))
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(m, -1)
    # |r|, |i|, |j|, |k| times 2 (scalar-first internally).
    q_abs = _sqrt_positive(torch.stack([1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22,
                                        1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], dim=-1))
    # Row c holds 2*|q_c| * (r, i, j, k) computed from the off-diagonals.
    candidates = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
    ], dim=-2)
    floor = torch.tensor(0.1, dtype=q_abs.dtype, device=q_abs.device)
    candidates = candidates / (2.0 * torch.maximum(q_abs[..., None], floor))
    best = q_abs.argmax(dim=-1)
    quat_rijk = torch.gather(candidates, -2, best[..., None, None].expand(batch + (1, 4))).squeeze(-2)
    quat = torch.cat([quat_rijk[..., 1:], quat_rijk[..., :1]], dim=-1)  # -> XYZW
    quat = torch.where(quat[..., 3:4] < 0, -quat, quat)
    return F.normalize(quat, dim=-1)


def _image_hw(image_hw: Sequence[int] | torch.Size) -> tuple[float, float]:
    if len(image_hw) != 2:
        raise ValueError(f"image_hw must be (H, W), got {tuple(image_hw)}")
    return float(image_hw[0]), float(image_hw[1])


def pose_encoding_to_extri_intri(pose_enc: torch.Tensor, image_hw: Sequence[int] | torch.Size,
                                 build_intrinsics: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Decode a pose encoding (..., 9) into extrinsics (..., 3, 4) and intrinsics (..., 3, 3).

    Args:
        pose_enc: ``[t(3), q XYZW(4), fov_h, fov_w]`` as predicted by the camera head.
        image_hw: (H, W) of the images the encoding refers to (the network input size).
        build_intrinsics: if False the second return value is None.
    """
    if pose_enc.shape[-1] != 9:
        raise ValueError(f"expected an {POSE_ENCODING_TYPE} encoding with 9 values, got shape {tuple(pose_enc.shape)}")
    H, W = _image_hw(image_hw)
    T = pose_enc[..., :3]
    R = quat_to_mat(pose_enc[..., 3:7])
    extrinsics = torch.cat([R, T[..., None]], dim=-1)
    if not build_intrinsics:
        return extrinsics, None
    fov_h, fov_w = pose_enc[..., 7], pose_enc[..., 8]
    fy = (H / 2.0) / torch.tan(fov_h / 2.0)
    fx = (W / 2.0) / torch.tan(fov_w / 2.0)
    intrinsics = torch.zeros(pose_enc.shape[:-1] + (3, 3), dtype=pose_enc.dtype, device=pose_enc.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = W / 2.0
    intrinsics[..., 1, 2] = H / 2.0
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def extri_intri_to_pose_encoding(extrinsics: torch.Tensor, intrinsics: torch.Tensor,
                                 image_hw: Sequence[int] | torch.Size) -> torch.Tensor:
    """Encode extrinsics (..., 3, 4) camera-from-world and intrinsics (..., 3, 3) into (..., 9).

    ``fov_h = 2 atan((H/2) / fy)``, ``fov_w = 2 atan((W/2) / fx)``; the quaternion has w >= 0.
    """
    if extrinsics.shape[-2:] != (3, 4) or intrinsics.shape[-2:] != (3, 3):
        raise ValueError(f"expected extrinsics (..., 3, 4) and intrinsics (..., 3, 3), got "
                         f"{tuple(extrinsics.shape)} and {tuple(intrinsics.shape)}")
    H, W = _image_hw(image_hw)
    quat = mat_to_quat(extrinsics[..., :3, :3])
    T = extrinsics[..., :3, 3]
    fov_h = 2 * torch.atan((H / 2.0) / intrinsics[..., 1, 1])
    fov_w = 2 * torch.atan((W / 2.0) / intrinsics[..., 0, 0])
    return torch.cat([T, quat, fov_h[..., None], fov_w[..., None]], dim=-1).to(extrinsics.dtype)


def closed_form_inverse_se3(extrinsics: torch.Tensor) -> torch.Tensor:
    """Invert rigid transforms (..., 3, 4) or (..., 4, 4) -> same shape, via ``[R^T | -R^T t]``."""
    R = extrinsics[..., :3, :3]
    t = extrinsics[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    inv = torch.cat([Rt, -Rt @ t], dim=-1)
    if extrinsics.shape[-2] == 4:
        bottom = torch.zeros_like(extrinsics[..., 3:, :])
        bottom[..., 3] = 1
        inv = torch.cat([inv, bottom], dim=-2)
    return inv
