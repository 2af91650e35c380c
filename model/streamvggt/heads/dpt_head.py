"""DPT dense-prediction head of StreamVGGT (depth, world points, or features for tracking / language).

Structure and parameter names follow the official checkpoint (``norm``, ``projects.{0..3}``,
``resize_layers.{0,1,3}``, ``scratch.layer{1..4}_rn``, ``scratch.refinenet{1..4}``, ``scratch.output_conv1``,
``scratch.output_conv2.{0,2}``). Numerical behaviour reproduces the reference implementation, including:

* the residual conv units add ``relu(x)`` (not ``x``) on their skip path, because the reference applies an
  in-place ReLU to its input before the first conv;
* every upsampling is bilinear with ``align_corners=True``;
* an optional sinusoidal UV positional embedding (scaled by 0.1) is added after each projection and again after
  the final interpolation.

Precision: inputs are cast to the head's parameter dtype, so a head converted with ``.half()`` / ``.to(bf16)``
accepts tokens of any float dtype. A float32 head used under ``torch.autocast`` also works (the convs then run
in the autocast dtype).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from model.streamvggt.heads.head_act import activate_head

# Above this many output elements F.interpolate can overflow int32 indexing; interpolate in batch chunks instead.
_INTERP_MAX_ELEMENTS = 1_610_612_736


def interpolate_bilinear(x: torch.Tensor, size: tuple[int, int] | None = None,
                         scale_factor: float | None = None) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` of x (N, C, h, w) -> (N, C, *size).

    ``scale_factor`` gives ``size = (int(h * f), int(w * f))``. Very large outputs are processed in chunks along N.
    """
    if size is None:
        if scale_factor is None:
            raise ValueError("interpolate_bilinear needs size or scale_factor")
        size = (int(x.shape[-2] * scale_factor), int(x.shape[-1] * scale_factor))
    size = (int(size[0]), int(size[1]))
    elements = size[0] * size[1] * x.shape[0] * x.shape[1]
    if elements <= _INTERP_MAX_ELEMENTS:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    chunks = torch.chunk(x, elements // _INTERP_MAX_ELEMENTS + 1, dim=0)
    return torch.cat([F.interpolate(c, size=size, mode="bilinear", align_corners=True) for c in chunks]).contiguous()


def uv_grid(width: int, height: int, aspect_ratio: float | None = None, dtype: torch.dtype | None = None,
            device: torch.device | None = None) -> torch.Tensor:
    """UV coordinates (height, width, 2) = (u, v) centred on 0 and normalised by the plane diagonal.

    With aspect ratio a = W/H the corners are at (+-a/d, +-1/d) scaled by (n-1)/n, d = sqrt(a^2 + 1).
    """
    if aspect_ratio is None:
        aspect_ratio = float(width) / float(height)
    diag = (aspect_ratio ** 2 + 1.0) ** 0.5
    span_x = aspect_ratio / diag * (width - 1) / width
    span_y = 1.0 / diag * (height - 1) / height
    xs = torch.linspace(-span_x, span_x, steps=width, dtype=dtype, device=device)
    ys = torch.linspace(-span_y, span_y, steps=height, dtype=dtype, device=device)
    vv, uu = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((uu, vv), dim=-1)


def sincos_embed_1d(pos: torch.Tensor, dim: int, omega_0: float = 100.0) -> torch.Tensor:
    """1-D sin/cos embedding of positions pos (M,) -> (M, dim) float32 as ``[sin(pos*w), cos(pos*w)]``.

    Frequencies ``w_k = omega_0 ** (-k / (dim/2))``, k = 0..dim/2-1; computed in float64 (float32 on MPS).
    """
    if dim % 2:
        raise ValueError(f"sin/cos embedding dimension must be even, got {dim}")
    work = torch.float32 if pos.device.type == "mps" else torch.float64
    omega = torch.arange(dim // 2, dtype=work, device=pos.device) / (dim / 2.0)
    omega = 1.0 / omega_0 ** omega
    angles = pos.reshape(-1).to(work)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def uv_position_embedding(grid: torch.Tensor, dim: int, omega_0: float = 100.0) -> torch.Tensor:
    """Embed a UV grid (H, W, 2) -> (H, W, dim): first half encodes u, second half v."""
    h, w, _ = grid.shape
    flat = grid.reshape(-1, 2)
    emb = torch.cat([sincos_embed_1d(flat[:, 0], dim // 2, omega_0),
                     sincos_embed_1d(flat[:, 1], dim // 2, omega_0)], dim=-1)
    return emb.view(h, w, dim)


class ResidualConvUnit(nn.Module):
    """``relu(x) + conv2(relu(conv1(relu(x))))`` (3x3 convs with bias). (N, C, h, w) -> (N, C, h, w).

    The skip adds relu(x): this reproduces the reference, whose in-place ReLU overwrites its input.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """RefineNet-style fusion: ``out_conv(up(RCU2(x + RCU1(skip))))``. Without residual there is no RCU1.

    Upsampling is bilinear (align_corners=True) to ``size`` if given, else by a factor 2.
    """

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, kernel_size=1, stride=1, padding=0, bias=True)
        self.has_residual = has_residual
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: Sequence[int] | None = None) -> torch.Tensor:
        if skip is not None:
            if not self.has_residual:
                raise ValueError("this fusion block was built without a residual branch (has_residual=False)")
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = interpolate_bilinear(x, scale_factor=2)
        else:
            x = interpolate_bilinear(x, size=(int(size[0]), int(size[1])))
        return self.out_conv(x)


class DPTHead(nn.Module):
    """DPT head over 4 intermediate token layers of the aggregator.

    Args:
        dim_in: token width (2 * embed_dim, i.e. 2048 for the released model).
        patch_size: backbone patch size in pixels.
        output_dim: raw output channels; the last one is the confidence (ignored with ``feature_only``).
        activation: value activation (``exp``, ``inv_log``, ``norm_exp``, ``norm``, ``relu``, ``xy_inv_log``,
            ``sigmoid``, ``linear``).
        conf_activation: confidence activation (``expp1``, ``expp0``, ``sigmoid``).
        features: fusion width.
        out_channels: projection widths of the 4 levels.
        intermediate_layer_idx: indices into the ``tokens_list`` passed to ``forward``.
        pos_embed: add the UV sin/cos positional embedding (x0.1).
        feature_only: return the fused features (B, S, features, H/down_ratio, W/down_ratio) instead of
            predictions (no ``output_conv2`` then).
        down_ratio: output resolution divisor.
    """

    def __init__(self, dim_in: int, patch_size: int = 14, output_dim: int = 4, activation: str = "inv_log",
                 conf_activation: str = "expp1", features: int = 256,
                 out_channels: Sequence[int] = (256, 512, 1024, 1024),
                 intermediate_layer_idx: Sequence[int] = (4, 11, 17, 23), pos_embed: bool = True,
                 feature_only: bool = False, down_ratio: int = 1) -> None:
        super().__init__()
        if len(out_channels) != 4 or len(intermediate_layer_idx) != 4:
            raise ValueError("DPTHead needs exactly 4 out_channels and 4 intermediate_layer_idx, got "
                             f"{tuple(out_channels)} and {tuple(intermediate_layer_idx)}")
        self.patch_size = patch_size
        self.activation = activation
        self.conf_activation = conf_activation
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.intermediate_layer_idx = tuple(int(i) for i in intermediate_layer_idx)
        oc = [int(c) for c in out_channels]

        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList([nn.Conv2d(dim_in, c, kernel_size=1, stride=1, padding=0) for c in oc])
        # Levels at 4x, 2x, 1x and 1/2x the patch grid.
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4, padding=0),
            nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2, padding=0),
            nn.Identity(),
            nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
        ])

        self.scratch = nn.Module()
        for k, c in enumerate(oc, start=1):
            setattr(self.scratch, f"layer{k}_rn", nn.Conv2d(c, features, kernel_size=3, stride=1, padding=1,
                                                              bias=False))
        self.scratch.refinenet1 = FeatureFusionBlock(features)
        self.scratch.refinenet2 = FeatureFusionBlock(features)
        self.scratch.refinenet3 = FeatureFusionBlock(features)
        self.scratch.refinenet4 = FeatureFusionBlock(features, has_residual=False)
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, stride=1, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, 32, kernel_size=3, stride=1, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(32, output_dim, kernel_size=1, stride=1, padding=0),
            )

    def forward(self, tokens_list: Sequence[torch.Tensor], images: torch.Tensor | Sequence[int],
                patch_start_idx: int, frames_chunk_size: int | None = 8
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Dense predictions from aggregated tokens.

        Args:
            tokens_list: token layers, each (B, S, P, dim_in); ``intermediate_layer_idx`` indexes this list.
            images: the input images (B, S, 3, H, W) (only the shape is read), or that shape as a sequence.
            patch_start_idx: index of the first patch token (5 for StreamVGGT).
            frames_chunk_size: frames processed at once (memory only; None = all).

        Returns:
            ``feature_only``: features (B, S, features, H/down_ratio, W/down_ratio);
            otherwise ``(preds (B, S, H, W, output_dim-1), conf (B, S, H, W))``.
        """
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else tuple(int(v) for v in images)
        if len(shape) != 5:
            raise ValueError(f"images must be (B, S, 3, H, W), got shape {shape}")
        num_frames = shape[1]
        if frames_chunk_size is None or frames_chunk_size >= num_frames:
            return self._forward_frames(tokens_list, shape, patch_start_idx, 0, num_frames)
        if frames_chunk_size <= 0:
            raise ValueError(f"frames_chunk_size must be positive or None, got {frames_chunk_size}")
        parts = [self._forward_frames(tokens_list, shape, patch_start_idx, s, min(s + frames_chunk_size, num_frames))
                 for s in range(0, num_frames, frames_chunk_size)]
        if self.feature_only:
            return torch.cat(cast(list[torch.Tensor], parts), dim=1)
        pairs = cast(list[tuple[torch.Tensor, torch.Tensor]], parts)
        return torch.cat([p[0] for p in pairs], dim=1), torch.cat([p[1] for p in pairs], dim=1)

    def _forward_frames(self, tokens_list: Sequence[torch.Tensor], shape: tuple[int, ...], patch_start_idx: int,
                        start: int, end: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run the head on frames [start, end)."""
        B, _, _, H, W = shape
        S = end - start
        patch_h, patch_w = H // self.patch_size, W // self.patch_size
        dtype = self.norm.weight.dtype

        levels = []
        for k, layer_idx in enumerate(self.intermediate_layer_idx):
            x = tokens_list[layer_idx][:, start:end, patch_start_idx:]
            if x.shape[2] != patch_h * patch_w:
                raise ValueError(f"token layer {layer_idx} has {x.shape[2]} patch tokens per frame but the images "
                                 f"{H}x{W} with patch size {self.patch_size} need {patch_h * patch_w}; check "
                                 "patch_start_idx and the image shape")
            x = self.norm(x.reshape(B * S, patch_h * patch_w, x.shape[-1]).to(dtype))
            x = x.permute(0, 2, 1).reshape(B * S, -1, patch_h, patch_w)
            x = self.projects[k](x)
            if self.pos_embed:
                x = self._add_pos_embed(x, W, H)
            levels.append(self.resize_layers[k](x))

        out = self._fuse(levels)
        out = interpolate_bilinear(out, size=(int(patch_h * self.patch_size / self.down_ratio),
                                              int(patch_w * self.patch_size / self.down_ratio)))
        if self.pos_embed:
            out = self._add_pos_embed(out, W, H)
        if self.feature_only:
            return out.view(B, S, *out.shape[1:])

        out = cast(Any, self.scratch).output_conv2(out)
        preds, conf = activate_head(out, activation=self.activation, conf_activation=self.conf_activation)
        return preds.view(B, S, *preds.shape[1:]), conf.view(B, S, *conf.shape[1:])

    def _fuse(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Fuse the 4 resized levels coarse-to-fine -> (N, C', 8*patch_h, 8*patch_w) after ``output_conv1``."""
        sc: Any = self.scratch  # a plain nn.Module holding the fusion layers by name
        l1, l2, l3, l4 = sc.layer1_rn(levels[0]), sc.layer2_rn(levels[1]), sc.layer3_rn(levels[2]), sc.layer4_rn(levels[3])
        out = sc.refinenet4(l4, size=l3.shape[2:])
        out = sc.refinenet3(out, l3, size=l2.shape[2:])
        out = sc.refinenet2(out, l2, size=l1.shape[2:])
        out = sc.refinenet1(out, l1)
        return sc.output_conv1(out)

    @staticmethod
    def _add_pos_embed(x: torch.Tensor, W: int, H: int, ratio: float = 0.1) -> torch.Tensor:
        """Add 0.1 x the UV sin/cos embedding of x's grid (aspect ratio of the W x H image) to x (N, C, h, w)."""
        emb = _cached_pos_embed(x.shape[-2], x.shape[-1], x.shape[1], W / H, ratio, x.dtype, x.device)
        return x + emb[None]


@functools.lru_cache(maxsize=10)
def _cached_pos_embed(h: int, w: int, dim: int, aspect_ratio: float, ratio: float, dtype: torch.dtype,
                      device: torch.device) -> torch.Tensor:
    """``ratio`` x UV sin/cos embedding (dim, h, w) in ``dtype``; cached because the full-resolution one is costly
    (about 1 s on 2 CPU cores at 294 x 518 x 128). The grid is built in ``dtype`` as in the reference."""
    grid = uv_grid(w, h, aspect_ratio=aspect_ratio, dtype=dtype, device=device)
    emb = uv_position_embedding(grid, dim) * ratio
    return emb.permute(2, 0, 1).to(dtype).contiguous()
