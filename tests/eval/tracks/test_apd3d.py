"""TAPVid-3D metrics (APD): against a loop reference, with the median scale alignment and without."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.tracks.apd3d import apd3d


def reference(gt, pred, g_occ, p_occ, focal, scaling):
    n, t = g_occ.shape
    if scaling == "median":
        gn, pn = [], []
        for i in range(n):
            for j in range(t):
                if not g_occ[i, j] and not p_occ[i, j]:
                    gn.append(max(math.sqrt(sum(v * v for v in gt[i, j])), 1e-6))
                    pn.append(max(math.sqrt(sum(v * v for v in pred[i, j])), 1e-6))
        s = float(np.median(gn)) / float(np.median(pn))
        pred = pred * s
    f = math.sqrt(focal[0] * focal[1])
    res = {}
    vis_count = sum(1 for i in range(n) for j in range(t) if not g_occ[i, j])
    within, jac = [], []
    for x in (1, 2, 4, 8, 16):
        corr = tp = fp = 0
        for i in range(n):
            for j in range(t):
                d = math.dist(pred[i, j], gt[i, j])
                near = d < x * gt[i, j, 2] / f
                if near and not g_occ[i, j]:
                    corr += 1
                    tp += int(not p_occ[i, j])
                if not p_occ[i, j] and (g_occ[i, j] or not near):
                    fp += 1
        within.append(corr / vis_count)
        jac.append(tp / (vis_count + fp))
    res["apd_3d"] = sum(within) / 5
    res["average_jaccard"] = sum(jac) / 5
    res["occlusion_accuracy"] = float(np.mean(g_occ == p_occ))
    return res


@pytest.mark.parametrize("scaling", ["median", "none"])
@pytest.mark.parametrize("seed", range(3))
def test_random_against_loop_reference(scaling, seed):
    rng = np.random.default_rng(seed)
    n, t = 15, 7
    gt = rng.normal(size=(n, t, 3)) + [0, 0, 6]
    pred = (gt + rng.normal(0, 0.05, gt.shape)) * 1.7
    g_occ, p_occ = rng.random((n, t)) < 0.2, rng.random((n, t)) < 0.2
    ours = apd3d(gt, pred, g_occ, p_occ, (300.0, 280.0), scaling)
    ref = reference(gt, pred, g_occ, p_occ, (300.0, 280.0), scaling)
    for k, v in ref.items():
        assert ours[k] == pytest.approx(v, abs=1e-12), k


def test_median_alignment_forgives_a_global_scale():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(10, 5, 3)) + [0, 0, 5]
    occ = np.zeros((10, 5), bool)
    assert apd3d(gt, gt, occ, occ, (100, 100))["apd_3d"] == 1.0
    assert apd3d(gt, 3 * gt, occ, occ, (100, 100), "median")["apd_3d"] == pytest.approx(1.0)
    assert apd3d(gt, 3 * gt, occ, occ, (100, 100), "none")["apd_3d"] < 0.2


def test_command_adds_3d_metrics_with_baselines(tmp_path):
    import json

    from eval.tracks.run import main
    from inference.tracking.format import write_tracks

    rng = np.random.default_rng(1)
    n, t = 12, 6
    cam = np.cumsum(rng.normal(0, 0.2, (n, t, 3)), axis=1) + [0, 0, 5]
    K = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    uv = cam @ K.T
    tracks = uv[..., :2] / uv[..., 2:]
    q = np.stack([np.zeros(n), tracks[:, 0, 1], tracks[:, 0, 0]], 1)
    occ = np.zeros((n, t), bool)
    gt = {"query_points": q, "tracks": tracks, "occluded": occ, "tracks_camera": cam, "image_size": np.array([96, 128]),
          "intrinsics": K}
    write_tracks(tmp_path / "gt.npz", gt)
    write_tracks(tmp_path / "pred.npz", {**gt, "tracks_camera": cam * 2.0})
    main(["--gt", str(tmp_path / "gt.npz"), "--pred", str(tmp_path / "pred.npz"), "--json", str(tmp_path / "r.json"),
          "-q"])
    r = json.loads((tmp_path / "r.json").read_text())["tracks_3d"]
    assert r["scaling"] == "median" and r["focal"] == [100.0, 100.0]
    assert r["ground_truth"]["apd_3d"] == 1.0
    assert r["prediction"]["apd_3d"] == pytest.approx(1.0)  # twice the scale, aligned by the median
    assert r["zero_motion"]["apd_3d"] < 0.9


def test_3d_metrics_are_skipped_with_a_warning_without_a_focal_length(tmp_path, caplog):
    from eval.tracks.run import main
    from inference.tracking.format import write_tracks

    n, t = 3, 4
    tr = {"query_points": np.zeros((n, 3)), "tracks": np.ones((n, t, 2)), "occluded": np.zeros((n, t), bool),
          "tracks_camera": np.ones((n, t, 3)), "image_size": np.array([8, 8])}
    write_tracks(tmp_path / "gt.npz", tr)
    out = main(["--gt", str(tmp_path / "gt.npz"), "--pred", str(tmp_path / "gt.npz")])
    assert "tracks_3d" not in out and out["average_jaccard"] == 1.0
    assert "no 3D metrics" in caplog.text and "--focal" in caplog.text
