"""Windowed cameras on the synthetic world's TRUE cameras stay continuous across window borders (issue 26).

A windowed backbone (VGGT, PAGE-4D) sees each window in its own gauge: its own world frame and its own scale. The
joining step (``model.vggt.windows.WindowedRunner`` with its Umeyama ``Sim3``) must undo that. Here a stand-in
backbone returns the synthetic world's exact cameras and depth, each window moved by its own random Sim(3); the
joined trajectory must be the true one up to ONE Sim(3) (the first window's), with no jump at a border. A random
tiny backbone's cameras mean nothing, so with ``vggt:tiny`` only what holds for any prediction is checked: finite
border steps, and the fitted Sim(3) brings the overlap frames closer than leaving the window where it is.
The measured figures beside the bounds are the same on ATEN_CPU_CAPABILITY=default, avx2 and avx512.
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from eval.geometry.poses import c2w_from_cam_from_world, pose_metrics
from eval.geometry.readers import read_synthetic_sequence
from model.backbones import load_backbone
from model.streamvggt.geometry import depth_to_world_points
from model.streamvggt.pose import extri_intri_to_pose_encoding, pose_encoding_to_extri_intri
from model.vggt.windows import MAX_PAIRS, WindowedRunner

FRAMES, W, H = 14, 42, 42
WINDOW, OVERLAP = 5, 2  # windows start at frames 0, 3, 6, 9: four windows, three borders


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The synthetic world (14 frames, 42x42): true camera-from-world (N, 3, 4), intrinsics (N, 3, 3), depth
    (N, H, W) and the rendered frames (N, 3, H, W) in [0, 1], all float64 but the frames."""
    from preprocess import make_synthetic

    scene = tmp_path_factory.mktemp("world") / "scene"
    make_synthetic.main(["--out", str(scene), "--frames", str(FRAMES), "--width", str(W), "--height", str(H),
                         "--no-progress", "-q"])
    gt = read_synthetic_sequence(scene)
    records = json.loads((scene / "gt" / "geometry" / "cameras.json").read_text())["frames"]
    extr = torch.tensor([r["extrinsics"] for r in records], dtype=torch.float64)
    intr = torch.tensor([r["intrinsics"] for r in records], dtype=torch.float64)
    depth = torch.from_numpy(np.stack([gt.read_depth(gt.depth_files[k]) for k in gt.keys])).double()
    rgb = [cv2.imread(str(scene / "rgb" / "2x" / f"{k}.png"))[..., ::-1] for k in gt.keys]
    frames = torch.from_numpy(np.stack(rgb).copy()).permute(0, 3, 1, 2).float() / 255
    return {"extr": extr, "intr": intr, "depth": depth, "frames": frames, "c2w": np.stack(list(gt.c2w.values()))}


def _random_gauge(seed: int) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(scale, rotation, translation) of a window's world: ``x_window = s R x_true + t``."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.det(q))
    return float(0.3 + 2.0 * torch.rand(1, generator=g)), q, torch.randn(3, generator=g, dtype=torch.float64)


class _TrueCamerasInOwnGauge(torch.nn.Module):
    """The world's exact cameras and depth, each window in its own random gauge (a fresh Sim(3) per call, as a
    backbone gives every window its own frame and scale). Frame identity is read from pixel [0, 0] of channel 0."""

    def __init__(self, extr: torch.Tensor, intr: torch.Tensor, depth: torch.Tensor) -> None:
        super().__init__()
        self.extr, self.intr, self.depth = extr, intr, depth
        self.gauges: list[tuple[float, torch.Tensor, torch.Tensor]] = []

    def forward(self, images, layers=None, heads=()):
        ids = (images[0, :, 0, 0, 0] * 100).round().long()
        s, rot, t = _random_gauge(len(self.gauges) + 11)
        self.gauges.append((s, rot, t))
        # x_true = R^T (x_window - t) / s, so X_cam (window units) = s (R_c x_true + t_c)
        #        = R_c R^T x_window + (s t_c - R_c R^T t)
        rc, tc = self.extr[ids, :, :3], self.extr[ids, :, 3]
        r_win = rc @ rot.T
        t_win = s * tc - r_win @ t
        e = torch.cat([r_win, t_win[..., None]], dim=-1)
        pose = extri_intri_to_pose_encoding(e.float(), self.intr[ids].float(), images.shape[-2:])
        return {"tokens": [images[:, :, :1, :1, :1].flatten(2)[..., None]], "patch_start_idx": 0,
                "pose_enc": pose[None], "depth": (self.depth[ids] * s)[None, ..., None].float(),
                "depth_conf": torch.ones(1, len(ids), *images.shape[-2:])}


def _run_windows(runner: WindowedRunner, images: torch.Tensor) -> list[dict]:
    """The video through ``runner`` as inference feeds it: ``window`` frames first, then ``window - overlap``."""
    outs, i = [], 0
    while i < len(images):
        take = runner.window if i == 0 else runner.new_frames_per_step
        outs.append(runner.step(images[i:i + take]))
        i += take
    return outs


def _centres(extr: torch.Tensor) -> np.ndarray:
    """Camera centres (N, 3) of camera-from-world (N, 3, 4)."""
    return c2w_from_cam_from_world(extr.double().numpy())[:, :3, 3]


def _border_steps() -> list[int]:
    """Index i of the steps (frame i -> i + 1) that cross from one window's new frames into the next's."""
    starts = list(range(WINDOW, FRAMES, WINDOW - OVERLAP))
    return [s - 1 for s in starts]


def test_true_cameras_in_own_gauges_join_into_the_true_trajectory(world):
    n = FRAMES
    images = torch.zeros(n, 3, H, W)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.float32) / 100
    model = _TrueCamerasInOwnGauge(world["extr"], world["intr"], world["depth"])
    outs = _run_windows(WindowedRunner(model, window=WINDOW, overlap=OVERLAP), images)
    assert len(outs) == 4 and len(model.gauges) == 4  # three window borders
    got = torch.cat([o["extrinsics"] for o in outs]).double()
    assert got.shape == (n, 3, 4)

    # (1) up to ONE Sim(3): the project's evaluation (evo, Umeyama with scale) finds no trajectory error
    m = pose_metrics(world["c2w"], c2w_from_cam_from_world(got.numpy()))
    assert m["ate"] < 1e-4 * _extent(world["c2w"]), m  # measured 1.1e-7 on a 0.54 extent (fp32 pose codes)
    assert m["rpe_rot"] < 0.01, m  # degrees; measured 8.5e-6
    # ... and that Sim(3) is the first window's gauge: the joint world is window 0's world exactly
    s0, r0, t0 = model.gauges[0]
    want = _centres(world["extr"]) @ (s0 * r0.numpy()).T + t0.numpy()
    np.testing.assert_allclose(_centres(got), want, atol=1e-4 * s0)  # measured 5.2e-7 (fp32 round trip)

    # (2) no jump at a border: every step of the joined trajectory is the true step in window 0's scale
    step_got = np.linalg.norm(np.diff(_centres(got), axis=0), axis=1)
    step_true = s0 * np.linalg.norm(np.diff(_centres(world["extr"]), axis=0), axis=1)
    ratio = step_got / step_true
    borders = _border_steps()
    assert borders == [4, 7, 10]
    np.testing.assert_allclose(ratio, 1.0, atol=1e-3)  # measured max |ratio - 1| 6.4e-6
    inside = np.delete(step_got, borders)
    assert step_got[borders].max() <= 1.5 * inside.max()  # the border steps are ordinary steps

    # the check has teeth: the windows left in their own gauges jump at every border
    raw = list(model.gauges)
    naive = _naive_centres(world["extr"], raw)
    naive_steps = np.linalg.norm(np.diff(naive, axis=0), axis=1)
    # (measured: border steps 1.86, 2.40, 0.55 against a median inside step of 0.09)
    assert all(naive_steps[b] > 3 * np.median(np.delete(naive_steps, borders)) for b in borders), naive_steps

    # depth carries the same single scale
    depth = torch.cat([o["depth"] for o in outs]).double()
    torch.testing.assert_close(depth, s0 * world["depth"], rtol=1e-4, atol=1e-6)  # measured 1.9e-7 relative


def _extent(c2w: np.ndarray) -> float:
    centres = c2w[:, :3, 3]
    return float(np.linalg.norm(centres.max(0) - centres.min(0)))


def _naive_centres(extr: torch.Tensor, gauges: list) -> np.ndarray:
    """Camera centres as each window predicts them in its own gauge, concatenated without alignment."""
    c = _centres(extr)
    out, i = [], 0
    for k, (s, rot, t) in enumerate(gauges):
        take = WINDOW if k == 0 else WINDOW - OVERLAP
        out.append(c[i:i + take] @ (s * rot.numpy()).T + t.numpy())
        i += take
    return np.concatenate(out)[:FRAMES]


def test_tiny_windowed_backbone_on_the_world_joins_with_finite_borders(world):
    """``vggt:tiny`` (random weights: its cameras mean nothing) on the world's frames: every joined camera and
    border step is finite, and at every border the fitted Sim(3) brings the overlap frames' points of the new
    window closer to the previous window's than leaving the window where it is (Umeyama is the least-squares
    Sim(3), and the identity is one)."""
    model = load_backbone("vggt:tiny:0")[0]
    images = world["frames"]
    assert OVERLAP * H * W <= MAX_PAIRS  # every overlap pixel enters the fit (no subsample)
    runner = WindowedRunner(model, window=WINDOW, overlap=OVERLAP)
    outs = _run_windows(runner, images)
    got = torch.cat([o["extrinsics"] for o in outs]).double()
    assert torch.isfinite(got).all() and torch.isfinite(torch.cat([o["depth"] for o in outs])).all()
    steps = np.linalg.norm(np.diff(_centres(got), axis=0), axis=1)
    assert np.isfinite(steps).all()

    start = 0
    for k in range(1, len(outs)):
        start += WINDOW if k == 1 else WINDOW - OVERLAP
        prev = outs[k - 1]
        # the previous window's joined points of the overlap frames (its last OVERLAP frames)
        prev_pts = depth_to_world_points(prev["depth"][-OVERLAP:].double(), prev["extrinsics"][-OVERLAP:].double(),
                                         prev["intrinsics"][-OVERLAP:].double())
        # the same frames as the new window sees them, in its own world (one forward pass of the whole window)
        window_images = images[start - OVERLAP:start - OVERLAP + WINDOW]
        ref = model(window_images[None], heads=("camera", "depth"))
        e, K = pose_encoding_to_extri_intri(ref["pose_enc"][0].float(), (H, W))
        own = depth_to_world_points(ref["depth"][0, :OVERLAP, ..., 0].double(), e[:OVERLAP].double(),
                                    K[:OVERLAP].double())
        sim = outs[k]["sim3"]
        before = torch.sqrt(((own - prev_pts) ** 2).sum(-1).mean())
        after = torch.sqrt(((sim.points(own) - prev_pts) ** 2).sum(-1).mean())
        assert math.isfinite(float(after)) and sim.scale > 0
        print(f"border {k}: overlap RMS {float(before):.4g} -> {float(after):.4g} after the Sim(3)")
        # least squares: never worse than the identity; strictly better here (a failed fit keeps the identity and
        # would tie). Measured RMS 1.21 -> 0.22, 0.90 -> 0.12, 1.22 -> 0.26
        assert after < before, (k, float(before), float(after))
