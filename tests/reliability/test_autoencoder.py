"""Reliability of ``preprocess.train_autoencoder`` (issue 11): killed (SIGKILL) right after writing its weights, or
while encoding, and re-run with the same command, it continues and gives the bytes of an uninterrupted run (weights,
config.json, train_stats.json, encoded targets) with no temporary file left; two uninterrupted runs give the same
bytes; feature rows with NaN and a fake weights file end in one ``error:`` line naming the file, nothing written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.reliability.conftest import assert_clean_error, leftovers, run_module
from tests.reliability.test_semantics import assert_same_files, fresh, kill_at, make_scene, run_main, snapshot

TRAIN = ("--scenes", "scene", "--features", "clip_features", "--dim", "3", "--out", "ae", "--epochs", "1",
         "--device", "cpu", "--no-progress")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A synthetic scene with oracle clip_features (weight-free hash text encoder)."""
    from model.text import HashTextEncoder
    from preprocess.extract_semantics import extract_oracle

    scene = make_scene(tmp_path_factory.mktemp("ae-template") / "scene")
    extract_oracle(scene, HashTextEncoder(), video=False, progress=False)
    return scene


@pytest.fixture(scope="module")
def reference(template, tmp_path_factory) -> dict[str, bytes]:
    work = fresh(template, tmp_path_factory.mktemp("ae-ref"))
    r = run_module("preprocess.train_autoencoder", *TRAIN, cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    return snapshot(work)


def test_two_uninterrupted_runs_same_bytes(template, reference, tmp_path):
    work = fresh(template, tmp_path / "w")
    r = run_module("preprocess.train_autoencoder", *TRAIN, cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    snap = snapshot(work)
    assert {"ae/model.safetensors", "ae/config.json", "ae/train_stats.json"} <= set(snap)
    assert any(k.startswith("scene/clip_features-language_features_dim3/") for k in snap)
    assert_same_files(snap, reference)


KILL_POINTS = {
    # the weights file is written, config.json / train_stats.json / the encoded targets are not
    "after-weights": ("utils.io", "save_safetensors_atomic", "model.safetensors", 1, "after"),
    # the autoencoder is completely saved, nothing is encoded yet
    "after-save": ("utils.io", "save_json_atomic", "train_stats.json", 1, "after"),
    # encoding, inside an atomic write: a temporary file is complete but not renamed yet
    "encoding-temp-file": ("os", "replace", "language_features_dim3.partial", 3, "before"),
}


@pytest.mark.parametrize("point", list(KILL_POINTS), ids=list(KILL_POINTS))
def test_killed_then_rerun_continues_to_same_bytes(template, reference, tmp_path, point):
    work = fresh(template, tmp_path / "w")
    kill_at(work, tmp_path / "stopped", KILL_POINTS[point], "preprocess.train_autoencoder", *TRAIN)
    assert (work / "ae" / "model.safetensors").is_file()
    assert not (work / "scene" / "clip_features-language_features_dim3").exists()
    r = run_module("preprocess.train_autoencoder", *TRAIN, cwd=work)  # the same command, no --overwrite
    assert r.returncode == 0, r.stderr[-3000:]
    assert leftovers(work) == []
    assert_same_files(snapshot(work), reference)


def test_rerun_with_other_settings_is_refused(template, reference, tmp_path, capsys, monkeypatch):
    """A saved autoencoder is only continued from by the same request; other settings still need --overwrite."""
    from preprocess import train_autoencoder

    work = fresh(template, tmp_path / "w")
    for name, data in reference.items():
        if name.startswith("ae/"):
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(data)
    monkeypatch.chdir(work)
    other = list(TRAIN)
    other[other.index("--epochs") + 1] = "3"
    r = run_main(train_autoencoder.main, other, capsys)
    assert_clean_error(r, mentions=Path("ae") / "model.safetensors")
    assert "--overwrite" in r.stderr
    assert not (work / "scene" / "clip_features-language_features_dim3").exists()


@pytest.mark.parametrize("mode", ["train", "load"])
def test_nan_feature_rows_are_refused_naming_the_file(template, reference, tmp_path, capsys, monkeypatch, mode):
    """NaN rows used to be left out of training and then encoded into NaN targets without a word."""
    from preprocess import train_autoencoder

    work = fresh(template, tmp_path / "w")
    bad = work / "scene" / "clip_features" / "000004_f.npy"
    f = np.load(bad)
    f[2] = np.nan
    np.save(bad, f)
    if mode == "load":
        (work / "saved").mkdir()
        for name in ("model.safetensors", "config.json"):
            (work / "saved" / name).write_bytes(reference[f"ae/{name}"])
        argv = ["--scenes", "scene", "--dim", "3", "--load", "saved", "--device", "cpu"]  # progress bar on
    else:
        argv = list(TRAIN)
    before = snapshot(work)
    monkeypatch.chdir(work)
    line = assert_clean_error(run_main(train_autoencoder.main, argv, capsys),
                              mentions=Path("scene/clip_features/000004_f.npy"))
    assert "NaN" in line
    assert snapshot(work) == before  # no autoencoder, no encoded folder, no partial folder


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_fake_safetensors_for_load_is_one_clean_error(template, reference, tmp_path, capsys, monkeypatch, damage):
    from preprocess import train_autoencoder

    work = fresh(template, tmp_path / "w")
    saved = work / "saved"
    saved.mkdir()
    (saved / "config.json").write_bytes(reference["ae/config.json"])
    weights = reference["ae/model.safetensors"]
    (saved / "model.safetensors").write_bytes({"garbage": b"not a safetensors file" * 4,
                                               "truncated": weights[: len(weights) // 2], "empty": b""}[damage])
    before = snapshot(work)
    monkeypatch.chdir(work)
    r = run_main(train_autoencoder.main, ["--scenes", "scene", "--dim", "3", "--load", "saved", "--device", "cpu"],
                 capsys)
    assert_clean_error(r, mentions=Path("saved") / "model.safetensors")
    assert snapshot(work) == before
