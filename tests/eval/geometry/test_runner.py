"""``python -m eval.geometry`` end to end on small folders: results files, sanity rows, dataset roots, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from eval.geometry.runner import main
from inference.outputs import OutputLayout, read_depth, write_depth
from tests.eval.geometry.helpers import depth_maps, sim3, trajectory, write_geometry
from utils.cli import UserExit

CONTRACT = ("abs_rel", "sq_rel", "rmse", "log_rmse", "delta_1", "delta_2", "delta_3", "valid_pixels", "ate",
            "rpe_trans", "rpe_rot")


def _scene(root, n=5, seed=0, a=2.0, b=0.05):
    """A synthetic scene's gt/geometry and a prediction = a * gt + b with a Sim(3)-moved trajectory."""
    gt_depth, c2w = depth_maps(n, seed=seed), trajectory(n, seed=seed)
    write_geometry(root / "scene" / "gt", gt_depth, c2w)
    est = sim3(c2w, 0.4, Rotation.from_rotvec([0.1, 0.5, -0.3]).as_matrix(), np.array([1.0, 2.0, 3.0]))
    write_geometry(root / "pred", (a * gt_depth + b).astype(np.float32), est)
    return root / "pred", root / "scene"


def test_synthetic_sequence_results_and_sanity_rows(tmp_path, capsys):
    pred, scene = _scene(tmp_path)
    out = tmp_path / "res"
    main(["--pred", str(pred), "--gt", str(scene), "--gt-format", "synthetic", "--out", str(out), "-q"])
    res = json.loads((out / "results.json").read_text())
    seq, ov = res["sequences"][0], res["overall"]
    for row in (seq, ov):
        assert set(CONTRACT) <= set(row)
    assert seq["sequence"] == "scene" and seq["frames"] == 5 and seq["valid_pixels"] == 5 * 12 * 16
    assert seq["abs_rel"] < 1e-4 and seq["delta_1"] == 1.0  # a*gt+b after scale&shift (measured ~3e-5)
    assert seq["ate"] < 1e-9 and seq["rpe_trans"] < 1e-9 and seq["rpe_rot"] < 1e-6
    g = seq["sanity"]["gt_vs_gt"]
    assert [g[k] for k in CONTRACT if k != "valid_pixels"] == [0.0] * 4 + [1.0] * 3 + [pytest.approx(0, abs=1e-9)] * 3
    assert seq["sanity"]["constant_depth"]["abs_rel"] > 0.1 and seq["sanity"]["identity_trajectory"]["ate"] > 0.1
    assert ov["abs_rel"] == seq["abs_rel"] and ov["sanity"]["gt_vs_gt"]["abs_rel"] == 0.0
    assert res["protocol"]["align"] == "scale&shift" and res["protocol"]["clip_max"] is None
    md = (out / "results.md").read_text()
    assert "| prediction |" in md and "`gt_vs_gt`" in md and "## scene (5 frames)" in md
    pics = sorted((out / "error_maps" / "scene").glob("*.png"))
    assert [p.stem for p in pics] == [f"{i:06d}" for i in range(1, 6)]
    assert "prediction" in capsys.readouterr().out


def test_metric_mode_gives_the_affine_errors(tmp_path):
    pred, scene = _scene(tmp_path, a=1.5, b=0.2)
    out = tmp_path / "res"
    summary = main(["--pred", str(pred), "--gt", str(scene), "--gt-format", "synthetic", "--align", "metric",
                    "--out", str(out), "--no-error-maps", "-q"])
    g = depth_maps(5).astype(np.float64)
    p = 1.5 * g + 0.2
    assert summary["overall"]["abs_rel"] == pytest.approx(np.mean(np.abs(p - g) / g), rel=1e-5)
    assert summary["overall"]["rmse"] == pytest.approx(np.sqrt(np.mean((p - g) ** 2)), rel=1e-5)
    assert not (out / "error_maps").exists()


def test_dataset_root_weights_sequences_by_valid_pixels(tmp_path):
    for i, name in enumerate(("a", "b")):
        pred, scene = _scene(tmp_path / f"tmp{i}", n=3 + 2 * i, seed=i, a=1.0 + i, b=0.0)
        (tmp_path / "gt").mkdir(exist_ok=True)
        (tmp_path / "out").mkdir(exist_ok=True)
        scene.rename(tmp_path / "gt" / name)
        pred.rename(tmp_path / "out" / name)
    summary = main(["--pred", str(tmp_path / "out"), "--gt", str(tmp_path / "gt"), "--gt-format", "synthetic",
                    "--align", "metric", "--out", str(tmp_path / "res"), "--no-error-maps", "-q"])
    rows = {r["sequence"]: r for r in summary["sequences"]}
    assert set(rows) == {"a", "b"} and rows["a"]["abs_rel"] == 0.0 and rows["b"]["abs_rel"] == pytest.approx(1.0)
    # weights 3*192 and 5*192 valid pixels
    assert summary["overall"]["abs_rel"] == pytest.approx(5 / 8)
    assert summary["overall"]["valid_pixels"] == 8 * 192


def _run_error(args, capsys):
    with pytest.raises(UserExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def _args(pred, gt, out):
    return ["--pred", str(pred), "--gt", str(gt), "--gt-format", "synthetic", "--out", str(out), "-q"]


def test_wrong_size_depth_is_refused_and_nothing_written(tmp_path, capsys):
    pred, scene = _scene(tmp_path)
    layout = OutputLayout(pred)
    t, _ = read_depth(layout.depth("000003"))
    write_depth(layout.depth("000003"), t["depth"][:, :8].contiguous(), t["conf"][:, :8], t["valid"][:, :8],
                t["extrinsics"].numpy(), t["intrinsics"].numpy(), {})
    msg = _run_error(_args(pred, scene, tmp_path / "res"), capsys)
    assert "000003.safetensors" in msg and "shape" in msg
    assert not (tmp_path / "res").exists()


def test_nan_depth_is_refused(tmp_path, capsys):
    pred, scene = _scene(tmp_path)
    layout = OutputLayout(pred)
    t, _ = read_depth(layout.depth("000002"))
    d = t["depth"].clone()
    d[2, 3] = float("nan")
    write_depth(layout.depth("000002"), d, t["conf"], t["valid"], t["extrinsics"].numpy(), t["intrinsics"].numpy(), {})
    msg = _run_error(_args(pred, scene, tmp_path / "res"), capsys)
    assert "non-finite" in msg and not (tmp_path / "res").exists()


def test_fewer_poses_than_frames_is_refused(tmp_path, capsys):
    pred, scene = _scene(tmp_path)
    cams = json.loads((pred / "geometry" / "cameras.json").read_text())
    cams["frames"] = cams["frames"][:-1]
    (pred / "geometry" / "cameras.json").write_text(json.dumps(cams))
    msg = _run_error(_args(pred, scene, tmp_path / "res"), capsys)
    assert "4 poses for 5 frames" in msg and not (tmp_path / "res").exists()


def test_missing_ground_truth_file_is_refused(tmp_path, capsys):
    pred, scene = _scene(tmp_path)
    OutputLayout(scene / "gt").depth("000004").unlink()
    msg = _run_error(_args(pred, scene, tmp_path / "res"), capsys)
    assert "000004" in msg and "not found" in msg and not (tmp_path / "res").exists()
    msg = _run_error(_args(pred, tmp_path / "nowhere", tmp_path / "res"), capsys)
    assert "ground-truth folder not found" in msg


def test_tum_sequence_end_to_end(tmp_path):
    import cv2

    seq = tmp_path / "walking"
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    n = 4
    stamps = [100.0 + 0.1 * i for i in range(n)]
    c2w = trajectory(n, seed=7)
    from eval.geometry.poses import tum_from_c2w

    xyz, q = tum_from_c2w(c2w)
    gt_depth = depth_maps(n, seed=7)
    (seq / "rgb.txt").write_text("".join(f"{t:.6f} rgb/{t:.6f}.png\n" for t in stamps))
    (seq / "depth.txt").write_text("".join(f"{t + 0.01:.6f} depth/{t:.6f}.png\n" for t in stamps))
    (seq / "groundtruth.txt").write_text("".join(f"{t:.6f} " + " ".join(f"{v:.9f}" for v in (*xyz[i], *q[i])) + "\n"
                                                 for i, t in enumerate(stamps)))
    png = np.round(gt_depth * 5000).astype(np.uint16)
    for i, t in enumerate(stamps):
        cv2.imwrite(str(seq / "depth" / f"{t:.6f}.png"), png[i])
    keys = [f"{t:.6f}" for t in stamps]
    write_geometry(tmp_path / "pred", (png / 5000.0).astype(np.float32), c2w, keys=keys)
    summary = main(["--pred", str(tmp_path / "pred"), "--gt", str(seq), "--gt-format", "tum", "--align", "metric",
                    "--out", str(tmp_path / "res"), "--no-error-maps", "-q"])
    ov = summary["overall"]
    assert ov["abs_rel"] < 1e-6 and ov["delta_1"] == 1.0  # float32 vs float64 of the same PNG values: ~3e-8
    gg = ov["sanity"]["gt_vs_gt"]
    assert (gg["abs_rel"], gg["rmse"], gg["delta_1"]) == (0.0, 0.0, 1.0)  # the float64 PNG depth against itself
    assert ov["ate"] < 1e-6 and ov["rpe_rot"] < 1e-5  # 9-decimal TUM rows


def test_prediction_of_another_size_is_resized_bicubic(tmp_path):
    import cv2

    from eval.geometry.depth import score_depth

    g = depth_maps(3, hw=(12, 16), seed=5)
    c2w = trajectory(3, seed=5)
    write_geometry(tmp_path / "scene" / "gt", g, c2w)
    small = depth_maps(3, hw=(6, 8), seed=6)
    write_geometry(tmp_path / "pred", small, c2w)
    summary = main(_args(tmp_path / "pred", tmp_path / "scene", tmp_path / "res") + ["--align", "median"])
    up = np.stack([cv2.resize(d, (16, 12), interpolation=cv2.INTER_CUBIC) for d in small])
    want = score_depth(up, g, "median").metrics
    assert summary["overall"]["abs_rel"] == want["abs_rel"] and summary["overall"]["rmse"] == want["rmse"]


def test_hypernerf_scores_poses_only(tmp_path):
    scene = tmp_path / "americano"
    (scene / "camera").mkdir(parents=True)
    c2w = trajectory(6, seed=8)
    keys = [f"{i:06d}" for i in range(1, 7)]
    for k, m in zip(keys, c2w, strict=True):
        R = m[:3, :3].T  # HyperNeRF orientation = camera-from-world rotation, position = centre
        (scene / "camera" / f"{k}.json").write_text(json.dumps({"orientation": R.tolist(),
                                                                "position": m[:3, 3].tolist()}))
    est = sim3(c2w, 2.0, Rotation.from_rotvec([0.0, 0.3, 0.0]).as_matrix(), np.zeros(3))
    write_geometry(tmp_path / "pred", depth_maps(6), est, keys=keys)
    summary = main(["--pred", str(tmp_path / "pred"), "--gt", str(scene), "--gt-format", "hypernerf",
                    "--out", str(tmp_path / "res"), "-q"])
    seq = summary["sequences"][0]
    assert seq["abs_rel"] is None and seq["valid_pixels"] == 0 and seq["ate"] < 1e-9
    assert "poses only" in seq["notes"][0] and not (tmp_path / "res" / "error_maps").exists()


def test_sintel_root_with_a_named_prediction_clips_at_70(tmp_path):
    from eval.geometry.readers import write_cam, write_dpt

    training = tmp_path / "Sintel" / "training"
    g = depth_maps(4, seed=9) * 10  # up to 80: some beyond the valid range
    c2w = trajectory(4, seed=9)
    for sub in ("depth/alley_2", "camdata_left/alley_2", "depth/cave_4"):
        (training / sub).mkdir(parents=True)
    keys = [f"frame_{i:04d}" for i in range(1, 5)]
    for i, k in enumerate(keys):
        write_dpt(training / "depth" / "alley_2" / f"{k}.dpt", g[i])
        write_cam(training / "camdata_left" / "alley_2" / f"{k}.cam", np.eye(3), np.linalg.inv(c2w[i])[:3])
    p = g * 1.5
    write_geometry(tmp_path / "outputs" / "alley_2", p, c2w, keys=keys)
    summary = main(["--pred", str(tmp_path / "outputs" / "alley_2"), "--gt", str(training), "--gt-format", "sintel",
                    "--align", "metric", "--out", str(tmp_path / "res"), "--no-error-maps", "-q"])
    valid = (g > 0) & (g < 70)
    want = np.mean(np.abs(np.minimum(p, 70.0) - g)[valid] / g[valid])
    seq = summary["sequences"][0]
    assert seq["sequence"] == "alley_2" and summary["protocol"]["clip_max"] == 70.0
    assert seq["valid_pixels"] == int(valid.sum()) and seq["abs_rel"] == pytest.approx(want, rel=1e-5)
    assert seq["ate"] < 1e-9
    # a folder name that is no sequence: the user must name it
    (tmp_path / "outputs" / "alley_2").rename(tmp_path / "outputs" / "run1")
    with pytest.raises(UserExit):
        main(["--pred", str(tmp_path / "outputs" / "run1"), "--gt", str(training), "--gt-format", "sintel",
              "--out", str(tmp_path / "res2"), "-q"])
    s2 = main(["--pred", str(tmp_path / "outputs" / "run1"), "--gt", str(training), "--gt-format", "sintel",
               "--sequences", "alley_2", "--align", "metric", "--out", str(tmp_path / "res2"), "--no-error-maps", "-q"])
    assert s2["overall"]["abs_rel"] == seq["abs_rel"]


def test_a_bad_later_sequence_leaves_no_pictures_behind(tmp_path, capsys):
    for i, name in enumerate(("a", "b")):
        pred, scene = _scene(tmp_path / f"tmp{i}", n=3, seed=i)
        (tmp_path / "gt").mkdir(exist_ok=True)
        (tmp_path / "out").mkdir(exist_ok=True)
        scene.rename(tmp_path / "gt" / name)
        pred.rename(tmp_path / "out" / name)
    layout = OutputLayout(tmp_path / "out" / "b")
    t, _ = read_depth(layout.depth("000003"))
    d = t["depth"].clone()
    d[0, 0] = float("inf")
    write_depth(layout.depth("000003"), d, t["conf"], t["valid"], t["extrinsics"].numpy(), t["intrinsics"].numpy(), {})
    msg = _run_error(_args(tmp_path / "out", tmp_path / "gt", tmp_path / "res"), capsys)
    assert "non-finite" in msg and "b/geometry/depth/000003" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt", "out", "tmp0", "tmp1"]  # no res, no staging folder


def test_a_random_tiny_backbone_is_called_a_baseline(tmp_path, capsys):
    pred, scene = _scene(tmp_path)
    (pred / "meta.json").write_text(json.dumps({"backbone_id": "tiny-random-seed0", "frames": []}))
    main(_args(pred, scene, tmp_path / "res") + ["--no-error-maps"])
    assert "random tiny backbone: a baseline" in capsys.readouterr().out
    assert "random tiny backbone" in (tmp_path / "res" / "results.md").read_text()
    res = json.loads((tmp_path / "res" / "results.json").read_text())
    assert res["sequences"][0]["backbone"] == "tiny-random-seed0"
    (pred / "meta.json").write_text(json.dumps({"backbone_id": "streamvggt-sha256-0123456789abcdef"}))
    main(_args(pred, scene, tmp_path / "res") + ["--no-error-maps"])
    assert "random tiny backbone" not in capsys.readouterr().out
