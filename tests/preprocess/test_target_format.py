"""The one home of the 4D LangSplat target format: names, planes and the one validation, which training's
pre-flight and the evaluator both apply (each used to miss rules of the other: non-integer indices passed training,
non-float rows passed training)."""

from __future__ import annotations

import numpy as np
import pytest

from model.levels import LEVELS
from preprocess.target_format import (
    LEVEL_PLANES,
    PLANES,
    feat_name,
    feat_path,
    key_of,
    partner,
    seg_name,
    seg_path,
    target_problems,
)
from utils.io import save_npy_atomic


def test_names_planes_and_partners(tmp_path):
    assert (seg_name("000001"), feat_name("000001")) == ("000001_s.npy", "000001_f.npy")
    assert key_of(seg_path(tmp_path, "a_b")) == key_of(feat_path(tmp_path, "a_b")) == "a_b"
    assert partner(seg_path(tmp_path, "k")) == feat_path(tmp_path, "k") and partner(feat_path(tmp_path, "k")) == \
        seg_path(tmp_path, "k")
    assert PLANES == ("default", *LEVELS) and PLANES[LEVEL_PLANES] == LEVELS
    with pytest.raises(ValueError, match="not a target file"):
        key_of(tmp_path / "k.npy")


def _pair(seg_values, rows):
    seg = np.full((4, 3, 5), -1, np.float32)
    seg[2, 1, 1:1 + len(seg_values)] = seg_values
    return seg, np.asarray(rows)


@pytest.mark.parametrize("values, rows, culprit, words", [
    ([0.5], np.eye(2, dtype=np.float32), "s", "neither -1 nor a row"),       # not an integer
    ([2], np.eye(2, dtype=np.float32), "s", "only 2 rows"),                  # beyond the rows
    ([-2], np.eye(2, dtype=np.float32), "s", "neither -1 nor a row"),        # below -1
    ([np.nan], np.eye(2, dtype=np.float32), "s", "NaN or inf in the region indices"),
    ([1], np.array([[0, 1], [np.inf, 0]], np.float32), "f", "NaN or inf in the feature rows"),
    ([1], np.eye(2, dtype=np.int64), "f", "float feature rows"),             # rows that are not floats
])
def test_one_validation_for_training_and_the_evaluator(tmp_path, values, rows, culprit, words):
    from eval.protocol.fields import FieldsError, TargetFields
    from training.dataset import check_target_values

    seg, feats = _pair(values, rows)
    s, f = seg_path(tmp_path, "000001"), feat_path(tmp_path, "000001")
    save_npy_atomic(seg, s)
    save_npy_atomic(feats, f)
    bad = s if culprit == "s" else f
    (path, what), = target_problems(seg, feats, LEVEL_PLANES, s, f)
    assert path == bad and words in what
    training, = check_target_values(s, f, LEVEL_PLANES)
    assert training.startswith(f"{bad}: ") and words in training
    with pytest.raises(FieldsError, match=words) as e:
        TargetFields._read_pair(tmp_path, "000001", 4)
    assert str(bad) in str(e.value)


def test_a_good_pair_and_unused_planes_pass(tmp_path):
    seg, feats = _pair([0, 1], np.eye(2, dtype=np.float32))
    assert target_problems(seg, feats, LEVEL_PLANES) == []
    seg[0, 0, 0] = 7  # the default plane, which training does not read
    assert target_problems(seg, feats, LEVEL_PLANES) == [] and target_problems(seg, feats)
