"""Output activations of the StreamVGGT heads (dense DPT outputs and the camera pose encoding).

Names follow the official ``activation`` / ``conf_activation`` strings so configs stay interchangeable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DENSE_ACTIVATIONS = ("norm_exp", "norm", "exp", "relu", "inv_log", "xy_inv_log", "sigmoid", "linear")
CONF_ACTIVATIONS = ("expp1", "expp0", "sigmoid")
POSE_ACTIVATIONS = ("linear", "inv_log", "exp", "relu")


def inverse_log_transform(y: torch.Tensor) -> torch.Tensor:
    """``sign(y) * (exp(|y|) - 1)``: the inverse of ``sign(x) * log(1 + |x|)``. Any shape."""
    return torch.sign(y) * torch.expm1(torch.abs(y))


def activate_dense(values: torch.Tensor, activation: str) -> torch.Tensor:
    """Apply a dense-value activation to ``values`` (..., C) (channels last)."""
    if activation == "exp":
        return torch.exp(values)
    if activation == "inv_log":
        return inverse_log_transform(values)
    if activation == "linear":
        return values
    if activation == "relu":
        return F.relu(values)
    if activation == "sigmoid":
        return torch.sigmoid(values)
    if activation == "norm":
        return values / values.norm(dim=-1, keepdim=True)
    if activation == "norm_exp":
        length = values.norm(dim=-1, keepdim=True).clamp(min=1e-8)
        return values / length * torch.expm1(length)
    if activation == "xy_inv_log":
        xy, z = values.split([values.shape[-1] - 1, 1], dim=-1)
        z = inverse_log_transform(z)
        return torch.cat([xy * z, z], dim=-1)
    raise ValueError(f"unknown dense activation {activation!r}; choose one of {DENSE_ACTIVATIONS}")


def activate_conf(conf: torch.Tensor, conf_activation: str) -> torch.Tensor:
    """Confidence activation: ``expp1`` = 1 + exp(c) (> 1), ``expp0`` = exp(c), ``sigmoid``. Any shape."""
    if conf_activation == "expp1":
        return 1 + conf.exp()
    if conf_activation == "expp0":
        return conf.exp()
    if conf_activation == "sigmoid":
        return torch.sigmoid(conf)
    raise ValueError(f"unknown confidence activation {conf_activation!r}; choose one of {CONF_ACTIVATIONS}")


def activate_head(out: torch.Tensor, activation: str = "norm_exp",
                  conf_activation: str = "expp1") -> tuple[torch.Tensor, torch.Tensor]:
    """Split a raw DPT output (N, C, H, W) into values (N, H, W, C-1) and confidence (N, H, W).

    The last channel is the confidence; the first C-1 channels are the value.
    """
    fmap = out.permute(0, 2, 3, 1)
    return activate_dense(fmap[..., :-1], activation), activate_conf(fmap[..., -1], conf_activation)


def base_pose_act(x: torch.Tensor, act_type: str = "linear") -> torch.Tensor:
    """Activation used on one part of the camera pose encoding (``linear``, ``inv_log``, ``exp``, ``relu``)."""
    if act_type == "linear":
        return x
    if act_type == "inv_log":
        return inverse_log_transform(x)
    if act_type == "exp":
        return torch.exp(x)
    if act_type == "relu":
        return F.relu(x)
    raise ValueError(f"unknown pose activation {act_type!r}; choose one of {POSE_ACTIVATIONS}")


def activate_pose(pose_enc: torch.Tensor, trans_act: str = "linear", quat_act: str = "linear",
                  fl_act: str = "linear") -> torch.Tensor:
    """Activate a raw pose encoding (..., 9): translation [:3], quaternion [3:7], FoV / focal [7:]."""
    return torch.cat([base_pose_act(pose_enc[..., :3], trans_act),
                      base_pose_act(pose_enc[..., 3:7], quat_act),
                      base_pose_act(pose_enc[..., 7:], fl_act)], dim=-1)
