"""Long videos through a windowed backbone: one window == one forward pass exactly; windows joined by Sim(3)
recover one continuous trajectory and depth scale when each window sees the scene in its own gauge."""

from __future__ import annotations

import math

import pytest
import torch

from model.backbones import load_backbone
from model.streamvggt.pose import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri
from model.vggt.windows import Sim3, WindowedRunner


def _random_sim3(seed: int) -> Sim3:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.det(q))
    return Sim3(float(0.5 + torch.rand(1, generator=g)), q, torch.randn(3, generator=g, dtype=torch.float64))


def test_umeyama_recovers_a_known_sim3():
    truth = _random_sim3(0)
    pts = torch.randn(500, 3, dtype=torch.float64)
    fit = Sim3.fit(pts, truth.points(pts))
    assert abs(fit.scale - truth.scale) < 1e-9
    assert torch.allclose(fit.rotation, truth.rotation, atol=1e-9)
    assert torch.allclose(fit.translation, truth.translation, atol=1e-9)


def test_a_video_within_one_window_is_exactly_one_forward_pass():
    model = load_backbone("page4d-mask:tiny:0")[0]
    images = torch.rand(5, 3, 56, 70, generator=torch.Generator().manual_seed(0))
    got = WindowedRunner(model, window=8, overlap=2).step(images)
    ref = model(images[None], heads=("camera", "depth"))
    for a, b in zip(got["tokens"], ref["tokens"], strict=True):
        assert torch.equal(a, b[0])
    extr, intr = pose_encoding_to_extri_intri(ref["pose_enc"][0].float(), (56, 70))
    assert torch.equal(got["extrinsics"], extr) and torch.equal(got["intrinsics"], intr)
    assert torch.equal(got["depth"], ref["depth"][0, ..., 0]) and torch.equal(got["depth_conf"], ref["depth_conf"][0])
    assert torch.equal(got["attn_value"], ref["attn_value"].reshape(5, -1))


class _GaugeModel(torch.nn.Module):
    """Predicts a fixed scene exactly, but each window in its own gauge: the window's first camera at the
    origin and a window-dependent scale (as VGGT-style models do). Frame identity is read from pixel [0, 0]."""

    def __init__(self, extr: torch.Tensor, intr: torch.Tensor, depth: torch.Tensor) -> None:
        super().__init__()
        self.extr, self.intr, self.depth = extr, intr, depth

    def forward(self, images, layers=None, heads=()):
        ids = (images[0, :, 0, 0, 0] * 100).round().long()
        first = self.extr[ids[0]]
        to_first = torch.cat([first, torch.tensor([[0, 0, 0, 1.0]], dtype=first.dtype)])  # world -> cam0
        inv = torch.linalg.inv(to_first)
        scale = 1.0 + 0.3 * math.sin(float(ids[0]))
        e = self.extr[ids] @ inv  # camera-from-(window world = cam0)
        e = torch.cat([e[:, :, :3], e[:, :, 3:] * scale], dim=-1)
        pose = extri_intri_to_pose_encoding(e.float(), self.intr[ids].float(), images.shape[-2:])
        return {"tokens": [images[:, :, :1, :1, :1].flatten(2)[..., None]], "patch_start_idx": 0,
                "pose_enc": pose[None], "depth": (self.depth[ids] * scale)[None, ..., None].float(),
                "depth_conf": torch.ones(1, len(ids), *images.shape[-2:])}


@pytest.mark.parametrize(("window", "overlap"), [(3, 1), (4, 2)])
def test_windows_joined_by_sim3_give_one_continuous_trajectory(window, overlap):
    n, h, w = 9, 14, 14
    g = torch.Generator().manual_seed(1)
    extr = []
    for i in range(n):  # a camera moving along a smooth arc
        a = 0.1 * i
        rot = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]],
                           dtype=torch.float64)
        extr.append(torch.cat([rot, torch.tensor([[0.2 * i], [0.05 * i], [0.0]], dtype=torch.float64)], dim=1))
    extr = torch.stack(extr)
    intr = torch.tensor([[20.0, 0, 7], [0, 20.0, 7], [0, 0, 1]], dtype=torch.float64).expand(n, 3, 3)
    depth = 2.0 + torch.rand(n, h, w, generator=g, dtype=torch.float64)
    images = torch.zeros(n, 3, h, w)
    images[:, :, 0, 0] = (torch.arange(n, dtype=torch.float32) / 100)[:, None]
    runner = WindowedRunner(_GaugeModel(extr, intr, depth), window=window, overlap=overlap)
    got_e, got_d, i = [], [], 0
    while i < n:
        take = window if i == 0 else window - overlap
        out = runner.step(images[i:i + take])
        got_e.append(out["extrinsics"])
        got_d.append(out["depth"])
        i += take
    got_e, got_d = torch.cat(got_e).double(), torch.cat(got_d).double()
    # the joint world is the first window's: camera 0 at the origin, its scale (1 for window 0)
    inv = torch.linalg.inv(torch.cat([extr[0], torch.tensor([[0, 0, 0, 1.0]], dtype=torch.float64)]))
    e0 = extr @ inv
    assert torch.allclose(got_e[:, :, :3], e0[:, :, :3], atol=1e-4)  # fp32 pose encoding round trip
    assert torch.allclose(got_e[:, :, 3], e0[:, :, 3], atol=1e-4)
    assert torch.allclose(got_d, depth, rtol=1e-4)


def test_a_degenerate_overlap_keeps_the_window_world_with_a_warning(caplog):
    import logging

    pts = torch.ones(50, 3, dtype=torch.float64)  # every pair the same point: no scale, no rotation
    with caplog.at_level(logging.WARNING):
        fit = Sim3.fit(pts, pts * 2)
    assert fit.scale == 1.0 and torch.equal(fit.rotation, torch.eye(3, dtype=torch.float64))
    assert any("Sim(3)" in r.getMessage() for r in caplog.records)
