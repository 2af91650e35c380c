"""``python -m eval.geometry --pred A B ...``: several predictions (e.g. one per backbone) on one ground truth, each
scored as alone, one row each in ``comparison.md``, a random tiny backbone labelled as a baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.geometry.runner import main
from tests.eval.geometry.helpers import depth_maps, trajectory, write_geometry
from utils.cli import UserExit


def _pred(root, name, depth, c2w, backbone_id):
    write_geometry(root / name, depth, c2w)
    (root / name / "meta.json").write_text(json.dumps({"backbone_id": backbone_id}))
    return root / name


def test_several_predictions_one_row_each(tmp_path, capsys):
    gt_depth, c2w = depth_maps(5), trajectory(5)
    write_geometry(tmp_path / "scene" / "gt", gt_depth, c2w)
    exact = _pred(tmp_path, "vggt", gt_depth, c2w, "vggt-sha256-abc")
    noisy = _pred(tmp_path, "page4d", (gt_depth * np.linspace(0.5, 2.0, gt_depth.size).reshape(gt_depth.shape))
                  .astype(np.float32), trajectory(5, seed=3), "page4d-tiny-random-seed0")
    out = tmp_path / "cmp"
    res = main(["--pred", str(exact), str(noisy), "--gt", str(tmp_path / "scene"), "--gt-format", "synthetic",
                "--out", str(out), "--no-error-maps", "-q"])
    alone = main(["--pred", str(noisy), "--gt", str(tmp_path / "scene"), "--gt-format", "synthetic",
                  "--out", str(tmp_path / "alone"), "--no-error-maps", "-q"])
    assert list(res["predictions"]) == ["vggt", "page4d"]
    assert json.loads((out / "comparison.json").read_text())["predictions"] == ["vggt", "page4d"]
    assert res["predictions"]["page4d"]["overall"] == alone["overall"]  # scored exactly as alone
    assert json.loads((out / "page4d" / "results.json").read_text())["overall"] == alone["overall"]
    table = (out / "comparison.md").read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| vggt", "| page4d", "| `constant_depth`", "| `identity_trajectory`"]
    assert "vggt-sha256-abc | weights file | 0.0000 |" in rows[0]  # the exact prediction: no error
    assert "RANDOM tiny" in rows[1] and "RANDOM tiny" not in rows[0]
    assert res["predictions"]["page4d"]["overall"]["abs_rel"] > 0.05
    assert table.strip().splitlines()[-1] in capsys.readouterr().out


def test_a_bad_second_prediction_writes_nothing(tmp_path):
    gt_depth, c2w = depth_maps(5), trajectory(5)
    write_geometry(tmp_path / "scene" / "gt", gt_depth, c2w)
    good = _pred(tmp_path, "a", gt_depth, c2w, "x")
    bad = _pred(tmp_path, "b", gt_depth[:4], c2w[:4], "y")
    (bad / "geometry" / "depth" / "000002.safetensors").unlink()  # a camera without its depth file
    (tmp_path / "c").mkdir()
    for second, says in ((bad, "depth file"), (tmp_path / "c", "not an inference output"), (good, "share the name")):
        with pytest.raises(UserExit) as e:
            main(["--pred", str(good), str(second), "--gt", str(tmp_path / "scene"), "--gt-format", "synthetic",
                  "--out", str(tmp_path / "cmp"), "-q"])
        assert e.value.code == 2 and says in str(e.value), str(e.value)
        assert not (tmp_path / "cmp").exists()
