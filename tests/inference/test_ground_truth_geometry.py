"""``python -m inference.ground_truth``: a synthetic scene's true geometry where the predicted one goes, labelled."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inference.ground_truth import GROUND_TRUTH_LABEL, is_ground_truth, main, use_ground_truth
from inference.outputs import OutputLayout
from inference.ply import read_ply
from tests.viewer.synth import make_output
from utils.cli import UserError


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_output(tmp_path_factory.mktemp("gtgeo"), frames=4, width=64, height=48)


def test_true_geometry_replaces_the_prediction_in_a_labelled_copy(made, tmp_path):
    before = (made["out"] / "geometry" / "cameras.json").read_bytes()
    out = use_ground_truth(made["out"], made["scene"], tmp_path / "gt_out")
    assert (made["out"] / "geometry" / "cameras.json").read_bytes() == before  # the prediction is untouched
    assert not is_ground_truth(OutputLayout(made["out"])) and is_ground_truth(OutputLayout(out))
    gt = made["scene"] / "gt" / "geometry"
    assert (out / "geometry" / "cameras.json").read_bytes() == (gt / "cameras.json").read_bytes()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["geometry"]["ground_truth"] is True and meta["geometry"]["label"] == GROUND_TRUTH_LABEL
    for key in meta["frames"]:
        assert (out / "geometry" / "depth" / f"{key}.safetensors").read_bytes() == \
            (gt / "depth" / f"{key}.safetensors").read_bytes()
        ply = read_ply(out / "geometry" / "points" / f"{key}.ply")
        labels = np.load(made["scene"] / "gt" / "labels" / f"{key}.npy", allow_pickle=False)[2]
        # every pixel has a true point; the cloth's points lie on the table plane z = 0 (metres)
        assert len(ply["xyz"]) == labels.size
        assert (np.abs(ply["xyz"][:, 2]) < 1e-5).mean() >= (labels == labels.min()).mean() - 1e-9
    # the fields are the model's, unchanged
    key = meta["frames"][0]
    assert (out / "fields" / f"{key}.safetensors").read_bytes() == \
        (made["out"] / "fields" / f"{key}.safetensors").read_bytes()


def test_the_viewer_reads_the_true_cameras(made, tmp_path):
    from viewer.scene import load_scene

    out = use_ground_truth(made["out"], made["scene"], tmp_path / "v")
    scene = load_scene(OutputLayout(out), max_points=500)
    cams = json.loads((made["scene"] / "gt" / "geometry" / "cameras.json").read_text())["frames"]
    for c in cams:
        np.testing.assert_allclose(scene.cameras[c["key"]].extrinsics, np.array(c["extrinsics"]))
        assert scene.cameras[c["key"]].ok


def test_a_scene_that_does_not_match_is_refused(made, tmp_path, capsys):
    other = tmp_path / "other"
    from preprocess.make_synthetic import SyntheticConfig, generate_synthetic_scene

    generate_synthetic_scene(other, SyntheticConfig(frames=4, width=40, height=32), progress=False)
    with pytest.raises(UserError, match="differs from the scene"):
        use_ground_truth(made["out"], other, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit):
        main(["--fields", str(made["out"]), "--scene", str(tmp_path), "--out", str(tmp_path / "y")])
    assert "gt/geometry" in capsys.readouterr().err
