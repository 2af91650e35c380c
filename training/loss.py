"""Loss of docs/architecture.md §5, with the cosine taken over the feature axis and per-sample masked means.

Per sample and level (mask = target region index != -1):

- ``l1 = sum_{valid px, channels} |pred - tgt| / (n_valid * k)``
- ``cos = sum_{valid px} (1 - cos_sim(pred, tgt) over the k channels) / n_valid``

A level with no valid pixel contributes 0. ``lang = mean over levels of (w_l1 * l1 + w_cos * cos)``;
the RGB term is ``w_img * L1 + (1 - w_img) * MSE`` over all pixels; the video term (when present) uses
the same masked L1 + cosine as a language level. Every term is a mean over the samples of per-sample
values, so a data-parallel run (gradients averaged over ranks of equal per-rank batch) gives the same
gradient as one process holding the whole global batch.

``kind="published"`` (``train.py --loss published``) reproduces the published ``train.py::compute_loss``
instead, as a reproduction switch (not a recommendation): pred and target are multiplied by the mask, then

- ``l1 = mean over ALL elements (channels x H x W, masked-out zeros included) of |pred*m - tgt*m|``;
- ``cos = 1 - mean of F.cosine_similarity(pred*m, tgt*m, dim=-1)``, i.e. over the image **width** axis (the
  published quirk), averaged over channels x rows (rows of masked-out zeros give similarity 0, loss 1);

with the same weights (0.2 L1, 0.01 cos) and the same RGB term (0.5 L1 + 0.5 MSE over all pixels). Every
level (and sample) has the same number of elements, so the mean over levels and samples of these
per-sample values equals the published single mean over the stacked (S, 3 levels, k, H, W) tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.decoder import LEVELS
from training.targets import expand_targets


@dataclass
class LossWeights:
    """Weights of the loss terms (published defaults)."""

    l1: float = 0.2
    cos: float = 0.01
    img: float = 0.5
    rgb: float = 1.0
    video: float = 1.0


def masked_feature_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, w_l1: float = 0.2, w_cos: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pred, target (B, k, H, W); mask (B, H, W) bool -> per-sample (B,) total, l1, cos (means over valid px)."""
    pred = pred.float()
    target = target.float()
    m = mask.to(pred.dtype)
    n = m.flatten(1).sum(1)
    denom = n.clamp_min(1.0)
    k = pred.shape[1]
    l1 = ((pred - target).abs() * m.unsqueeze(1)).flatten(1).sum(1) / (denom * k)
    cos = ((1.0 - F.cosine_similarity(pred, target, dim=1, eps=1e-8)) * m).flatten(1).sum(1) / denom
    return w_l1 * l1 + w_cos * cos, l1, cos


def published_feature_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, w_l1: float = 0.2, w_cos: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The published loss of one level: pred, target (B, k, H, W); mask (B, H, W) -> per-sample (B,) total,
    l1 (mean over every element, masked-out ones included), cos (1 - mean cosine over the width axis)."""
    m = mask.to(torch.float32).unsqueeze(1)
    p = pred.float() * m
    t = target.float() * m
    l1 = (p - t).abs().flatten(1).mean(1)
    cos = 1.0 - F.cosine_similarity(p, t, dim=-1).flatten(1).mean(1)
    return w_l1 * l1 + w_cos * cos, l1, cos


LOSS_KINDS = ("ours", "published")


def rgb_loss(pred: torch.Tensor, target: torch.Tensor, w_img: float = 0.5) -> torch.Tensor:
    """pred, target (B, 3, H, W) -> per-sample (B,) ``w_img * L1 + (1 - w_img) * MSE``."""
    diff = pred.float() - target.float()
    return w_img * diff.abs().flatten(1).mean(1) + (1.0 - w_img) * diff.pow(2).flatten(1).mean(1)


def compute_loss(
    outputs: dict, batch: dict, weights: LossWeights | None = None, reduce: bool = True, kind: str = "ours"
) -> dict[str, torch.Tensor]:
    """Decoder outputs + a batch -> dict of loss terms.

    ``batch`` holds ``lang_target`` (B, 3 levels, k, H, W), ``lang_mask`` (B, 3, H, W) bool, ``frame``
    (B, 3, H, W) float and optionally ``video_target`` (B, v, H, W) + ``video_mask`` (B, H, W); a compact batch
    (``lang_index`` / ``lang_table``, :mod:`training.targets`, moved to the device) is expanded first.
    ``kind``: ``ours`` (masked means, cosine over the feature axis) or ``published`` (see the module doc; the
    video term, ours only, then uses the published formulas too). Returns ``loss`` (the total) and each term (``lang``, ``l1``, ``cos``, ``rgb``, ``video``), as scalars
    (means over the batch) or, with ``reduce=False``, per-sample (B,) tensors.
    """
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}; choose one of {LOSS_KINDS}")
    feature_loss = published_feature_loss if kind == "published" else masked_feature_loss
    w = weights or LossWeights()
    batch = expand_targets(batch)
    tgt, msk = batch["lang_target"], batch["lang_mask"]
    lang = l1 = cos = 0.0
    for i, lvl in enumerate(LEVELS):
        t, a, c = feature_loss(outputs["lang"][lvl], tgt[:, i], msk[:, i], w.l1, w.cos)
        lang, l1, cos = lang + t, l1 + a, cos + c
    n_lvl = len(LEVELS)
    terms = {"lang": lang / n_lvl, "l1": l1 / n_lvl, "cos": cos / n_lvl}
    total = terms["lang"]
    if "rgb" in outputs and w.rgb > 0:
        terms["rgb"] = rgb_loss(outputs["rgb"], batch["frame"], w.img)
        total = total + w.rgb * terms["rgb"]
    if "video" in outputs and "video_target" in batch and w.video > 0:
        terms["video"] = feature_loss(outputs["video"], batch["video_target"], batch["video_mask"], w.l1, w.cos)[0]
        total = total + w.video * terms["video"]
    terms["loss"] = total
    if reduce:
        terms = {k: v.mean() for k, v in terms.items()}
    return terms
