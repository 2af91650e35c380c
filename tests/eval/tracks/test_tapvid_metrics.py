"""Our TAP-Vid metrics equal an independent reference written with plain loops (the published definition, counted
point by point and frame by frame), on random and degenerate inputs, in both query modes; the command scales to
256 x 256 and scores the two baselines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from eval.tracks.run import main
from eval.tracks.tapvid import METRIC_NAMES, tapvid_metrics, to_256
from inference.tracking.format import write_tracks


def reference(query_points, gt_occ, gt_xy, pred_occ, pred_xy, mode):
    """Loop-by-loop TAP-Vid metrics of one video (the published definition, re-derived)."""
    n, t = len(gt_occ), (len(gt_occ[0]) if len(gt_occ) else gt_xy.shape[1])
    counts = {"eval": 0, "occ_ok": 0, "vis": 0}
    per = {x: {"correct": 0, "tp": 0, "fp": 0} for x in (1, 2, 4, 8, 16)}
    for i in range(n):
        q = round(float(query_points[i][0]))  # Python's round is half-to-even too
        for j in range(t):
            scored = (j > q) if mode == "first" else (j != q)
            if not scored:
                continue
            counts["eval"] += 1
            counts["occ_ok"] += int(bool(gt_occ[i][j]) == bool(pred_occ[i][j]))
            visible = not gt_occ[i][j]
            counts["vis"] += int(visible)
            dx = float(pred_xy[i][j][0]) - float(gt_xy[i][j][0])
            dy = float(pred_xy[i][j][1]) - float(gt_xy[i][j][1])
            dist2 = dx * dx + dy * dy
            for x, c in per.items():
                near = dist2 < x * x
                if near and visible:
                    c["correct"] += 1
                    if not pred_occ[i][j]:
                        c["tp"] += 1
                if not pred_occ[i][j] and (not visible or not near):
                    c["fp"] += 1

    def div(a, b):
        return a / b if b else math.nan

    out = {"occlusion_accuracy": div(counts["occ_ok"], counts["eval"])}
    for x, c in per.items():
        out[f"pts_within_{x}"] = div(c["correct"], counts["vis"])
        out[f"jaccard_{x}"] = div(c["tp"], counts["vis"] + c["fp"])
    out["average_jaccard"] = sum(out[f"jaccard_{x}"] for x in per) / 5
    out["average_pts_within_thresh"] = sum(out[f"pts_within_{x}"] for x in per) / 5
    return out


def assert_same(ours, ref):
    assert list(ours) == list(METRIC_NAMES)
    for k in METRIC_NAMES:
        a, b = ours[k], ref[k]
        if math.isnan(b):
            assert math.isnan(a), k
        else:  # the same counts divided once: equal up to the last bit of the 5-term means
            assert a == pytest.approx(b, abs=1e-15), k


def random_case(rng, n, t, spread):
    q = np.stack([rng.integers(0, t, n), rng.uniform(0, 255, n), rng.uniform(0, 255, n)], 1).astype(np.float64)
    gt = rng.uniform(0, 256, (n, t, 2))
    pred = gt + rng.normal(0, spread, (n, t, 2))
    return q, rng.random((n, t)) < 0.3, gt, rng.random((n, t)) < 0.3, pred


@pytest.mark.parametrize("mode", ["first", "strided"])
@pytest.mark.parametrize("seed", range(6))
def test_random_inputs_equal_the_loop_reference(mode, seed):
    rng = np.random.default_rng(seed)
    q, go, g, po, p = random_case(rng, int(rng.integers(1, 40)), int(rng.integers(2, 30)), [1, 3, 10][seed % 3])
    assert_same(tapvid_metrics(q, go, g, po, p, mode), reference(q, go, g, po, p, mode))


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_degenerate_inputs(mode):
    rng = np.random.default_rng(7)
    n, t = 6, 5
    q, go, g, po, p = random_case(rng, n, t, 2)
    cases = []
    never = go.copy()
    never[:] = True  # no point is ever visible: pts_within undefined, jaccard 0 or undefined
    cases.append((q, never, g, po, p))
    qe = q.copy()
    qe[:, 0] = t - 1  # every query at the last frame: nothing after it in "first" mode
    cases.append((qe, go, g, po, p))
    cases.append((q, go, g, np.ones_like(po), p))  # everything predicted occluded
    exact = g.copy()
    exact[..., 0] += 1.0  # exactly 1 px off: not within 1 (strict), within 2
    cases.append((q, go, g, po, exact))
    nanp = p.copy()
    nanp[0] = np.nan  # a NaN prediction is never within
    cases.append((q, go, g, po, nanp))
    half = q.copy()
    half[:, 0] = [0.5, 1.5, 2.5, 3.5, 1.49, 2.51]  # half-to-even rounding of query frames
    cases.append((half, go, g, po, p))
    cases.append((q[:0], go[:0], g[:0], po[:0], p[:0]))  # no point at all: every metric undefined
    for c in cases:
        assert_same(tapvid_metrics(*c, mode), reference(*c, mode))
    empty = tapvid_metrics(*cases[-1], mode)
    assert all(math.isnan(v) for v in empty.values())


def test_query_frames_outside_the_video_are_refused():
    q = np.array([[5.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="query frames"):
        tapvid_metrics(q, np.zeros((1, 5), bool), np.zeros((1, 5, 2)), np.zeros((1, 5), bool), np.zeros((1, 5, 2)),
                       "first")


def _files(tmp_path, h=128, w=512, n=20, t=12, seed=0):
    rng = np.random.default_rng(seed)
    qf = rng.integers(0, t - 1, n)
    tracks = np.cumsum(rng.normal(0, 3, (n, t, 2)), axis=1) + [w / 2, h / 2]
    occ = rng.random((n, t)) < 0.2
    occ[np.arange(n), qf] = False
    q = np.stack([qf, tracks[np.arange(n), qf, 1], tracks[np.arange(n), qf, 0]], 1)
    gt = {"query_points": q, "tracks": tracks, "occluded": occ, "image_size": np.array([h, w])}
    pred = {"query_points": q, "tracks": tracks + rng.normal(0, 1.5, tracks.shape), "occluded": occ.copy()}
    write_tracks(tmp_path / "gt.npz", gt)
    write_tracks(tmp_path / "pred.npz", pred)
    return gt, pred


@pytest.mark.parametrize("mode", ["first", "strided"])
def test_command_scales_to_256_and_scores_the_baselines(tmp_path, mode):
    gt, pred = _files(tmp_path)
    out = main(["--gt", str(tmp_path / "gt.npz"), "--pred", str(tmp_path / "pred.npz"), "--query-mode", mode,
                "--json", str(tmp_path / "m.json"), "-q"])
    saved = json.loads((tmp_path / "m.json").read_text())
    # stored as float32, scaled x by 256/512 and y by 256/128 (TAP-Vid's raster)
    g32 = {k: np.asarray(v, np.float32).astype(np.float64) for k, v in gt.items()}
    p32 = np.asarray(pred["tracks"], np.float32).astype(np.float64)
    scale = np.array([0.5, 2.0])
    ref = reference(g32["query_points"], gt["occluded"], g32["tracks"] * scale, pred["occluded"], p32 * scale, mode)
    for k in METRIC_NAMES:
        assert saved[k] == pytest.approx(ref[k], abs=1e-15)
        assert out["tracks"]["prediction"][k] == saved[k]
    truth = saved["tracks"]["ground_truth"]
    assert truth["average_jaccard"] == 1.0 and truth["occlusion_accuracy"] == 1.0
    assert truth["average_pts_within_thresh"] == 1.0
    zero = saved["tracks"]["zero_motion"]
    assert zero["average_jaccard"] < saved["average_jaccard"]
    assert np.allclose(to_256([[512.0, 128.0]], (128, 512)), [[256.0, 256.0]])


def test_command_refuses_a_prediction_for_other_queries(tmp_path, capsys):
    gt, pred = _files(tmp_path)
    pred["query_points"] = pred["query_points"] + [0, 5, 0]
    write_tracks(tmp_path / "other.npz", pred)
    with pytest.raises(SystemExit) as e:
        main(["--gt", str(tmp_path / "gt.npz"), "--pred", str(tmp_path / "other.npz")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the prediction's query_points differ")


def test_batched_layout_and_visible_key_are_read(tmp_path):
    from inference.tracking.format import read_tracks

    gt, pred = _files(tmp_path)
    np.savez(tmp_path / "batched.npz", query_points=gt["query_points"][None], tracks=gt["tracks"][None],
             visible=~gt["occluded"][None], image_size=gt["image_size"])
    got = read_tracks(tmp_path / "batched.npz")
    assert got["tracks"].shape == gt["tracks"].shape and np.array_equal(got["occluded"], gt["occluded"])
    a = main(["--gt", str(tmp_path / "gt.npz"), "--pred", str(tmp_path / "pred.npz"), "-q"])
    b = main(["--gt", str(tmp_path / "batched.npz"), "--pred", str(tmp_path / "pred.npz"), "-q"])
    assert a["average_jaccard"] == pytest.approx(b["average_jaccard"], abs=1e-6)  # float64 vs float32 storage


def test_without_image_size_positions_are_scored_as_given_and_pred_may_omit_queries(tmp_path, caplog):
    rng = np.random.default_rng(3)
    q, go, g, po, p = random_case(rng, 10, 8, 2)
    np.savez(tmp_path / "gt.npz", query_points=q, tracks=g, occluded=go)  # no image_size
    np.savez(tmp_path / "pred.npz", tracks=p, occluded=po)  # no query_points
    out = main(["--gt", str(tmp_path / "gt.npz"), "--pred", str(tmp_path / "pred.npz"), "--query-mode", "strided"])
    assert "no image_size" in caplog.text
    ref = reference(q, go, g, po, p, "strided")
    for k in METRIC_NAMES:
        assert out[k] == pytest.approx(ref[k], abs=1e-15)
