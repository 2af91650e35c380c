"""Hand-computed cases for IoU, pixel accuracy, the temporal smoothing, Acc and vIoU."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.protocol.metrics import (
    mask_iou,
    pixel_accuracy,
    smooth_scores,
    temporal_accuracy,
    temporal_predictions,
    video_iou,
)


def test_iou_and_pixel_accuracy_toy_masks():
    pred = np.zeros((4, 4), bool)
    gt = np.zeros((4, 4), bool)
    pred[0:2, 0:2] = True  # 4 px
    gt[1:3, 1:3] = True  # 4 px, overlap 1 px (1,1)
    assert mask_iou(pred, gt) == pytest.approx(1 / 7)
    # TP 1, FP 3, FN 3, TN 9 -> (1 + 9) / 16
    assert pixel_accuracy(pred, gt) == pytest.approx(10 / 16)
    assert mask_iou(gt, gt) == 1.0 and pixel_accuracy(gt, gt) == 1.0
    assert mask_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0  # both empty: convention
    assert mask_iou(pred, np.zeros((4, 4))) == 0.0
    with pytest.raises(ValueError):
        mask_iou(pred, np.zeros((3, 4)))


def test_smoothing_keeps_end_frames():
    s = np.array([1.0, 0.0, 1.0, 0.0])
    out = smooth_scores(s)
    np.testing.assert_allclose(out, [1.0, 0.1 * 1 + 0.8 * 0 + 0.1 * 1, 0.1 * 0 + 0.8 * 1 + 0.1 * 0, 0.0])
    np.testing.assert_allclose(smooth_scores([0.3, 0.7]), [0.3, 0.7])


def test_threshold_is_mean_of_raw_scores():
    # raw mean 0.5; smoothed [0.9, 0.82, 0.18, 0.1] -> [T, T, F, F]
    raw = np.array([0.9, 0.9, 0.1, 0.1])
    np.testing.assert_array_equal(temporal_predictions(raw), [True, True, False, False])
    # a one-frame dip is smoothed away: raw [1, 1, 0.4, 1, 1], mean 0.88, smoothed dip 0.8*0.4+0.2 = 0.52 < 0.88
    raw = np.array([1.0, 1.0, 0.4, 1.0, 1.0])
    pred = temporal_predictions(raw)
    np.testing.assert_array_equal(pred, [True, True, False, True, True])
    # an isolated spike that smoothing keeps below the mean: raw [0, 0, 1, 0, 0] mean .2, smoothed [0,.1,.8,.1,0]
    np.testing.assert_array_equal(temporal_predictions([0, 0, 1, 0, 0]), [False, False, True, False, False])


def test_acc_and_viou_toy_intervals():
    pred = np.array([1, 1, 1, 0, 0, 0], bool)
    label = np.array([0, 1, 1, 1, 0, 0], bool)
    ious = np.array([0.9, 0.8, 0.6, 0.7, 0.2, 0.1])
    assert temporal_accuracy(pred, label) == pytest.approx(4 / 6)
    # pred & label = frames 1, 2 -> 0.8 + 0.6; pred | label = frames 0..3 -> 4
    assert video_iou(pred, label, ious) == pytest.approx(1.4 / 4)
    assert video_iou(label, label, ious) == pytest.approx((0.8 + 0.6 + 0.7) / 3)
    assert video_iou(np.zeros(3, bool), np.zeros(3, bool), np.ones(3)) == 0.0  # as published (no frames -> 0)
    assert math.isnan(temporal_accuracy([], []))
