"""TUM RGB-D / Bonn and Sintel frame layouts as sources of token extraction and inference (preprocess/layout.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from preprocess.frames import list_frames
from preprocess.layout import discover_jobs

IMG = np.zeros((6, 8, 3), np.uint8)


def _tum(seq: Path, stamps=("1305031102.175304", "1305031102.211214", "1305031102.243211")) -> list[str]:
    (seq / "rgb").mkdir(parents=True)
    (seq / "depth").mkdir()
    (seq / "rgb.txt").write_text("# color images\n" + "".join(f"{s} rgb/{s}.png\n" for s in stamps))
    for s in stamps:
        cv2.imwrite(str(seq / "rgb" / f"{s}.png"), IMG)
    return list(stamps)


def _sintel(training: Path, seqs=("alley_1", "market_2"), n=3) -> None:
    for pas in ("final", "clean"):
        for s in seqs:
            (training / pas / s).mkdir(parents=True)
            for i in range(1, n + 1):
                cv2.imwrite(str(training / pas / s / f"frame_{i:04d}.png"), IMG)
    (training / "depth" / seqs[0]).mkdir(parents=True)


def test_tum_sequence_folder_is_a_source(tmp_path):
    seq = tmp_path / "rgbd_bonn_balloon2"
    keys = _tum(seq)
    jobs = discover_jobs(seq)
    assert [(j.name, j.source, j.tokens_dir) for j in jobs] == [("rgbd_bonn_balloon2", seq / "rgb", seq / "tokens")]
    assert [f.key for f in list_frames(seq)] == keys  # the frame keys are the rgb.txt file stems (timestamps)
    assert discover_jobs(seq / "rgb")[0].tokens_dir == seq / "tokens"  # the frame folder itself: same tokens


def test_tum_dataset_root(tmp_path):
    _tum(tmp_path / "tum" / "rgbd_dataset_freiburg3_walking_xyz")
    _tum(tmp_path / "tum" / "rgbd_dataset_freiburg3_sitting_static")
    (tmp_path / "tum" / "notes").mkdir()
    jobs = discover_jobs(tmp_path / "tum")
    assert [j.name for j in jobs] == ["rgbd_dataset_freiburg3_sitting_static", "rgbd_dataset_freiburg3_walking_xyz"]
    assert all(j.source.name == "rgb" and j.tokens_dir == j.source.parent / "tokens" for j in jobs)


def test_sintel_pass_folder_is_a_dataset_root(tmp_path):
    training = tmp_path / "Sintel" / "training"
    _sintel(training)
    jobs = discover_jobs(training / "final")
    assert [(j.name, j.source, j.tokens_dir) for j in jobs] == [
        (s, training / "final" / s, training / "tokens" / "final" / s) for s in ("alley_1", "market_2")]
    assert [j.tokens_dir for j in discover_jobs(training / "clean", scenes=["market_2"])] == [
        training / "tokens" / "clean" / "market_2"]
    one = discover_jobs(training / "final" / "alley_1")
    assert [(j.name, j.tokens_dir) for j in one] == [("alley_1", training / "tokens" / "final" / "alley_1")]
    assert [f.key for f in list_frames(training / "final" / "alley_1")] == ["frame_0001", "frame_0002", "frame_0003"]


def test_inference_names_outputs_after_the_sequences(tmp_path):
    from inference.run import expand_sources

    training = tmp_path / "training"
    _sintel(training)
    assert expand_sources([str(training / "final")]) == [(training / "final" / s, s) for s in ("alley_1", "market_2")]
    _tum(tmp_path / "bonn" / "rgbd_bonn_crowd2")
    assert expand_sources([str(tmp_path / "bonn" / "rgbd_bonn_crowd2")]) == [(tmp_path / "bonn" / "rgbd_bonn_crowd2",
                                                                             None)]


def test_an_empty_tum_folder_is_still_refused(tmp_path):
    (tmp_path / "seq" / "rgb").mkdir(parents=True)
    (tmp_path / "seq" / "rgb.txt").write_text("# nothing\n")
    with pytest.raises(FileNotFoundError, match="no frames"):
        list_frames(tmp_path / "seq")
