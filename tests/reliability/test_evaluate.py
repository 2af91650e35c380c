"""Reliability of ``eval.protocol.runner`` (issue 11): every bad input ends in one ``error:`` line naming the file at fault,
exit code 2, no traceback, no output folder; polygons with fewer than 3 points are skipped *and counted* in the
report; results.json is valid JSON and two runs write the same bytes.

Most cases call the entry point in this process (a fresh interpreter costs seconds on a 2-core machine); one case
runs the real command line in a fresh interpreter.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.reliability.conftest import assert_clean_error, run_module
from tests.reliability.test_semantics import make_scene, run_main, snapshot

COCO = Path("scene/annotations/train/_annotations.coco.json")
VIDEO = Path("scene/annotations/video_annotations.json")
TARGETS = ["--scene", "scene", "--targets", "--hash-text", "--device", "cpu", "--out", "res"]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A synthetic scene with oracle targets (clip_features + video_features, weight-free hash text encoder)."""
    from model.text import HashTextEncoder
    from preprocess.extract_semantics import extract_oracle

    scene = make_scene(tmp_path_factory.mktemp("eval-template") / "scene")
    extract_oracle(scene, HashTextEncoder(), progress=False)
    return scene


@pytest.fixture
def work(template, tmp_path, monkeypatch) -> Path:
    shutil.copytree(template, tmp_path / "scene")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _edit_npy(path: Path, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    np.save(path, edit(np.load(path)))


class Refused:
    """Stands for an object no weights file holds: a weights-only load refuses its pickle."""


def _fake_autoencoder(kind: str) -> Path:
    from model.autoencoder import FeatureAutoencoder

    if kind == "garbage.pth":
        Path("fake.pth").write_bytes(b"this is not a checkpoint" * 8)
        return Path("fake.pth")
    if kind == "refused-pickle.pth":
        torch.save({"encoder.0.weight": torch.zeros(2, 2), "payload": Refused()}, "refused.pth")
        return Path("refused.pth")
    if kind == "other-model.pth":
        torch.save({"head.weight": torch.zeros(3, 4)}, "other.pth")
        return Path("other.pth")
    if kind == "fake.safetensors":
        Path("fake.safetensors").write_bytes(b"\xff" * 64)
        return Path("fake.safetensors")
    folder = Path("ae")
    FeatureAutoencoder(512, (16, 3), (16, 512)).save(folder)
    if kind == "folder-fake-weights":
        (folder / "model.safetensors").write_bytes(b"not safetensors" * 8)
        return folder / "model.safetensors"
    if kind == "folder-bad-config":
        (folder / "config.json").write_text('{"in_dim": 512}')
        return folder / "config.json"
    if kind == "folder-other-widths":
        FeatureAutoencoder(512, (32, 3), (16, 512)).save(Path("ae2"))
        shutil.copy(Path("ae2") / "model.safetensors", folder / "model.safetensors")
        return folder / "model.safetensors"
    assert kind == "folder-ok", kind
    return folder


# each case: edit the copied scene (cwd = its parent), return (argv, the path the error line must name)
def _malformed_coco(w):
    COCO.write_text('{"images": [{"id": 1, ')
    return TARGETS, COCO


def _odd_polygon(w):
    _edit_json(COCO, lambda d: d["annotations"][0]["segmentation"][0].append(7))
    return TARGETS, COCO


def _missing_coco_field(w):
    _edit_json(COCO, lambda d: d["images"][0].pop("height"))
    return TARGETS, COCO


def _frame_not_in_scene(w):
    def edit(d):
        d["images"].append({"id": 99, "file_name": "000099_png.rf.x.jpg", "height": 48, "width": 64})
        d["annotations"].append(dict(d["annotations"][0], id=999, image_id=99))
    _edit_json(COCO, edit)
    return TARGETS, COCO


def _inverted_interval(w):
    _edit_json(VIDEO, lambda d: d["glass"].__setitem__("empty glass", [[4, 0]]))
    return TARGETS, VIDEO


def _missing_scene(w):
    return ["--scene", "nowhere", "--targets", "--hash-text", "--out", "res"], Path("nowhere")


def _empty_scene(w):
    Path("empty").mkdir()
    return ["--scene", "empty", "--targets", "--hash-text", "--out", "res"], Path("empty")


def _missing_fields(w):
    return ["--scene", "scene", "--fields", "nowhere", "--hash-text", "--out", "res"], Path("nowhere")


def _empty_fields(w):
    Path("fields").mkdir()
    return ["--scene", "scene", "--fields", "fields", "--hash-text", "--out", "res"], Path("fields")


def _fake_field_safetensors(w):
    Path("out/fields").mkdir(parents=True)
    Path("out/fields/000003.safetensors").write_bytes(b"\x00" * 40)
    return ["--scene", "scene", "--fields", "out", "--hash-text", "--out", "res"], Path("out/fields/000003.safetensors")


def _fake_query_safetensors(w):
    Path("q.safetensors").write_bytes(b"{}" * 10)
    return TARGETS + ["--video-query-embeddings", "q.safetensors"], Path("q.safetensors")


def _targets_index_beyond_rows(w):
    def edit(s):
        s[2, 10, 10] = 10_000
        return s
    _edit_npy(Path("scene/clip_features/000003_s.npy"), edit)
    return TARGETS, Path("scene/clip_features/000003_s.npy")


def _targets_wrong_size(w):
    _edit_npy(Path("scene/clip_features/000007_s.npy"), lambda s: s[:, :40, :60])
    return TARGETS, Path("scene/clip_features/000007_s.npy")


def _targets_wrong_planes(w):
    _edit_npy(Path("scene/clip_features/000003_s.npy"), lambda s: s[:3])
    return TARGETS, Path("scene/clip_features/000003_s.npy")


def _targets_nan_rows(w):
    def edit(f):
        f[0] = np.nan
        return f
    _edit_npy(Path("scene/clip_features/000003_f.npy"), edit)
    return TARGETS, Path("scene/clip_features/000003_f.npy")


def _video_targets_wrong_size(w):
    _edit_npy(Path("scene/video_features/000003_s.npy"), lambda s: s[:, :40])
    return TARGETS, Path("scene/video_features/000003_s.npy")


def _autoencoder_case(kind):
    def case(w):
        path = _fake_autoencoder(kind)
        arg = path.parent if kind.startswith("folder") else path
        return TARGETS + ["--autoencoder", str(arg)], path
    case.__name__ = f"_autoencoder_{kind}"
    return case


def _autoencoder_wrong_latent(w):
    """A real autoencoder, but for 3-d latents, on 512-d targets."""
    _fake_autoencoder("folder-ok")
    return TARGETS + ["--autoencoder", "ae"], Path("ae")


CASES = [_malformed_coco, _odd_polygon, _missing_coco_field, _frame_not_in_scene, _inverted_interval, _missing_scene,
         _empty_scene, _missing_fields, _empty_fields, _fake_field_safetensors, _fake_query_safetensors,
         _targets_index_beyond_rows, _targets_wrong_size, _targets_wrong_planes, _targets_nan_rows,
         _video_targets_wrong_size, _autoencoder_wrong_latent] + [
    _autoencoder_case(k) for k in ("garbage.pth", "refused-pickle.pth", "other-model.pth", "fake.safetensors",
                                   "folder-fake-weights", "folder-bad-config", "folder-other-widths")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__.lstrip("_") for c in CASES])
def test_bad_input_is_one_clean_error_naming_the_file(work, case, capsys):
    from eval import evaluate

    argv, culprit = case(work)
    before = snapshot(work / "scene")
    r = run_main(evaluate.main, argv, capsys)
    assert_clean_error(r, mentions=culprit)
    assert not (work / "res").exists()  # no output folder, no partial results
    assert snapshot(work / "scene") == before


def test_clean_error_in_a_fresh_interpreter(work):
    argv, culprit = _odd_polygon(work)
    r = run_module("eval.evaluate", *argv, cwd=work)
    assert_clean_error(r, mentions=culprit)
    assert not (work / "res").exists()


def _strict_json(path: Path):
    def refuse(name):
        raise AssertionError(f"{path}: bare {name} is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_short_polygon_is_skipped_and_counted(work, capsys):
    """A polygon with fewer than 3 points used to become an empty ground-truth mask without a word."""
    from eval import evaluate

    def edit(d):
        d["annotations"][0]["segmentation"][0] = [3, 4, 30, 40]  # two points
    _edit_json(COCO, edit)
    ann = json.loads(COCO.read_text())["annotations"][0]
    r = run_main(evaluate.main, TARGETS, capsys)
    assert r.returncode in (0, None), r.stderr
    res = _strict_json(work / "res" / "results.json")
    assert res["overall"]["n_skipped_annotations"] == 1
    skipped = res["scenes"][0]["skipped_annotations"]
    assert [(s["annotation"], s["frame"]) for s in skipped] == [(ann["id"], 2)]
    assert "fewer than 3" in skipped[0]["reason"]
    md = (work / "res" / "results.md").read_text()
    assert "## Skipped annotations (1)" in md and "fewer than 3" in md


def test_results_valid_json_and_same_bytes_twice(work, capsys):
    from eval import evaluate

    outs = []
    for name in ("a", "b"):
        r = run_main(evaluate.main, TARGETS[:-1] + [name], capsys)
        assert r.returncode in (0, None), r.stderr
        _strict_json(work / name / "results.json")
        outs.append(snapshot(work / name))
    assert outs[0] == outs[1]
