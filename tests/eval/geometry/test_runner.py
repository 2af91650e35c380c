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
    assert ov["ate"] < 1e-6 and ov["rpe_rot"] < 1e-5  # 9-decimal TUM rows
