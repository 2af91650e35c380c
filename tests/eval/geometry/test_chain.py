"""The whole chain on a TUM RGB-D layout: frames (``rgb/`` + ``rgb.txt``) -> tiny-backbone tokens -> inference ->
``eval.geometry`` against the sequence's own depth PNGs and ``groundtruth.txt``.

The backbone and decoder are tiny and random (a decoder trained for one epoch on a synthetic scene), so the figures
are a baseline; the test checks that every stage accepts the layout, that frames are matched by their timestamp keys,
and that the sanity rows hold. Marked slow: ~15 s of CPU time (38 s wall on the loaded shared 2-core machine).
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from eval.geometry.poses import tum_from_c2w
from tests.eval.geometry.helpers import trajectory

pytestmark = pytest.mark.slow
W, H, N = 84, 56, 5


def _tum_sequence(seq, frames):
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    stamps = [f"{1305031102.175304 + 0.033 * i:.6f}" for i in range(len(frames))]
    for i, (s, f) in enumerate(zip(stamps, frames, strict=True)):
        cv2.imwrite(str(seq / "rgb" / f"{s}.png"), f)
        depth = np.full((H, W), 2.0 + 0.1 * i, np.float64)
        depth[:, : W // 2] = 3.5
        depth[0, :] = 0.0  # no measurement
        cv2.imwrite(str(seq / "depth" / f"{s}.png"), np.round(depth * 5000).astype(np.uint16))
    (seq / "rgb.txt").write_text("# color images\n" + "".join(f"{s} rgb/{s}.png\n" for s in stamps))
    (seq / "depth.txt").write_text("# depth maps\n" + "".join(f"{float(s) + 0.004:.6f} depth/{s}.png\n"
                                                               for s in stamps))
    xyz, q = tum_from_c2w(trajectory(len(frames), seed=2))
    (seq / "groundtruth.txt").write_text("# timestamp tx ty tz qx qy qz qw\n" + "".join(
        f"{float(s) - 0.002:.6f} " + " ".join(f"{v:.7f}" for v in (*xyz[i], *q[i])) + "\n"
        for i, s in enumerate(stamps)))
    return stamps


def test_tum_layout_through_tokens_inference_and_geometry_eval(tmp_path):
    from eval.geometry.runner import main as geometry_main
    from inference.run import main as infer_main
    from preprocess import extract_tokens, make_synthetic
    from training.trainer import main as train_main

    torch.manual_seed(0)
    scene = tmp_path / "scene"
    make_synthetic.main(["--out", str(scene), "--frames", "4", "--width", str(W), "--height", str(H), "--no-progress"])
    from preprocess import extract_semantics

    extract_semantics.main(["--scene", str(scene), "--mode", "oracle", "--clip", "tiny", "--device", "cpu",
                            "--no-video"])
    extract_tokens.main([str(scene), "--backbone", "tiny", "--target-width", str(W), "--device", "cpu",
                         "--no-progress"])
    train_main(["--scenes", str(scene), "--decoder", "tiny", "--epochs", "1", "--batch-size", "2",
                "--features", "clip_features", "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress",
                "--no-val", "--no-video"])
    frames = [cv2.imread(str(p)) for p in sorted((scene / "rgb" / "2x").glob("*.png"))][:N]
    frames += frames[: N - len(frames)]
    seq = tmp_path / "tum" / "rgbd_dataset_freiburg3_walking_xyz"
    stamps = _tum_sequence(seq, frames)
    # the TUM sequence folder is a source: tokens go to <seq>/tokens, inference finds them there
    extract_tokens.main([str(seq), "--backbone", "tiny", "--target-width", str(W), "--device", "cpu", "--no-progress"])
    assert sorted(p.stem for p in (seq / "tokens").glob("*.safetensors")) == stamps
    out = tmp_path / "out"
    infer_main(["--source", str(seq), "--decoder", str(tmp_path / "run"), "--backbone", "tiny", "--out", str(out),
                "--device", "cpu", "-q"])
    summary = geometry_main(["--pred", str(out), "--gt", str(seq), "--gt-format", "tum", "--out",
                             str(tmp_path / "res"), "-q"])
    row = summary["sequences"][0]
    assert row["sequence"] == seq.name and row["frames"] == N and row["valid_pixels"] == N * (H - 1) * W
    assert all(np.isfinite(row[k]) for k in ("abs_rel", "rmse", "delta_1"))
    assert row["max_timestamp_gap_s"] == pytest.approx(0.002, abs=1e-6)
    gg = row["sanity"]["gt_vs_gt"]
    assert (gg["abs_rel"], gg["delta_1"]) == (0.0, 1.0) and gg["ate"] < 1e-6
    assert sorted(p.stem for p in (tmp_path / "res" / "error_maps" / seq.name).glob("*.png")) == stamps
    assert json.loads((tmp_path / "res" / "results.json").read_text())["overall"]["frames"] == N
