"""``eval.query --track``: a text query's points are followed through the video (they stay on the moving ball),
the trail pictures put a dot where each tracked point is, and the motion timeline says the ball moves."""

from __future__ import annotations

import json

import numpy as np
import torch

import eval.query.text as text_mod
from eval.query.track import DOT, sample_mask_points
from inference.geometry import fov_intrinsics
from inference.pipeline import ChunkOutput, Frame, InferenceSettings, run_inference
from inference.tracking.format import read_tracks
from inference.visualize import load_png
from preprocess.crop import CropInfo
from tests.inference.tracking.synth import texture

H, W, T = 80, 112, 6
NAMES = ("red ball", "wooden table")


def ball_mask(i: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - 40) ** 2 + (xx - 28 - 4 * i) ** 2 < 20 ** 2


def frames_rgb() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    bg, ball = texture(rng, H, W), texture(rng, H, W + 40)
    out = []
    for i in range(T):
        m = ball_mask(i)
        shifted = ball[:, 40 - 4 * i: 40 - 4 * i + W]  # the ball's texture moves with it (+4 px per frame)
        img = np.where(m, shifted, bg).astype(np.uint8)
        out.append(np.repeat(img[:, :, None], 3, axis=2))
    return out


class OraclePredictor:
    """Fields = the text embedding of the region name under each pixel; depth 1, a still identity camera."""

    def __init__(self, enc):
        self.emb = enc(list(NAMES))

    def __call__(self, frames, keep):
        S = len(frames)
        fl = torch.stack([torch.where(torch.from_numpy(ball_mask(f.index))[None], self.emb[0].view(-1, 1, 1),
                                      self.emb[1].view(-1, 1, 1)) for f in frames])
        ext = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1).expand(S, 3, 4)
        K = torch.as_tensor(fov_intrinsics(1.0, 1.0, (H, W)), dtype=torch.float32).expand(S, 3, 3)
        return ChunkOutput(fields={lvl: fl for lvl in ("small", "middle", "large")},
                           rgb=torch.stack([f.image for f in frames]), depth=torch.ones(S, H, W),
                           conf=torch.full((S, H, W), 2.0), extrinsics=ext, intrinsics=K)


def test_sample_mask_points_stay_inside_and_spread():
    m = ball_mask(0)
    pts = sample_mask_points(m, 20)
    assert len(pts) == 20 and len(np.unique(pts, axis=0)) == 20
    assert m[(pts[:, 1] - 0.5).astype(int), (pts[:, 0] - 0.5).astype(int)].all()
    assert np.ptp(pts[:, 0]) >= 20  # spread over the eroded ball (diameter 39 - 8 px), not one corner
    assert sample_mask_points(m, 20, margin=0)[:, 0].min() < pts[:, 0].min()  # the margin keeps off the edge
    assert len(sample_mask_points(np.zeros((4, 4), bool), 5)) == 0


def test_track_a_text_query(tmp_path, capsys):
    from eval.query import main

    enc = text_mod.HashTextEncoder(dim=512)
    rgbs = frames_rgb()
    frames = (Frame(f"{i + 1:06d}", i, rgbs[i], torch.from_numpy(rgbs[i]).permute(2, 0, 1).float() / 255,
                    CropInfo.identity((H, W))) for i in range(T))
    run_inference(frames, T, OraclePredictor(enc.encode_text), tmp_path / "inf",
                  InferenceSettings(chunk=3, pca=False, conf_percentile=0.0, point_stride=4))
    main(["--fields", str(tmp_path / "inf"), "--text", "red ball", "--hash-text", "--no-video", "--no-ply",
          "--out", str(tmp_path / "q"), "--device", "cpu", "--track", "--track-points", "30", "-q"])
    printed = capsys.readouterr().out
    assert "red ball: 30 points tracked from frame" in printed and "moves in frames 000001-000006" in printed
    tr = read_tracks(tmp_path / "q" / "tracks" / "red_ball.npz")
    assert tr["tracks"].shape == (30, T, 2) and tr["tracks_world"].shape == (30, T, 3)
    qf = int(tr["query_frame"])
    assert np.all(tr["query_points"][:, 0] == qf)
    # visible tracked points lie on the ball in every frame, and are visible most of the time
    vis = ~tr["occluded"]
    assert vis.mean() > 0.8  # measured 0.97
    for f in range(T):
        xy = np.round(tr["tracks"][vis[:, f], f] - 0.5).astype(int)
        on = ball_mask(f)[np.clip(xy[:, 1], 0, H - 1), np.clip(xy[:, 0], 0, W - 1)]
        assert on.mean() > 0.9, (f, on.mean())  # measured 1.0 in every frame (OpenCV LK, no torch kernels)
        trails = load_png(tmp_path / "q" / "red_ball" / "trails" / f"{f + 1:06d}.png")
        assert trails.shape == (H, W, 3)
        # a yellow dot where each visible tracked point is
        assert (trails[xy[:, 1], xy[:, 0]] == DOT).all()
    # the lifted points lie at depth 1 in front of the identity camera
    np.testing.assert_allclose(tr["tracks_world"][..., 2], 1.0, atol=1e-5)
    timeline = json.loads((tmp_path / "q" / "red_ball" / "timeline.json").read_text())
    assert timeline["moving_intervals"] == [[0, T - 1]]
    assert all(r["moving_fraction"] > 0.25 for r in timeline["frames"])
