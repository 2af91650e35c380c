"""Video-depth alignment and metrics against hand computations (eval/geometry/depth.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.geometry.depth import (
    ALIGN_MODES,
    fit_scale,
    fit_scale_shift,
    median_ratio,
    resize_to,
    score_depth,
    weighted_average,
)


def _gt(seed=0, shape=(3, 10, 14)):
    return np.random.default_rng(seed).uniform(0.5, 10.0, size=shape).astype(np.float32)


@pytest.mark.parametrize("align", ALIGN_MODES)
def test_ground_truth_against_itself_is_exact_in_every_mode(align):
    g = _gt()
    g[0, 0, :3] = 0.0  # no measurement
    g[1, 2, :2] = 75.0  # beyond the valid range
    r = score_depth(g.copy(), g, align, clip_max=70.0)
    m = r.metrics
    assert (m["abs_rel"], m["sq_rel"], m["rmse"], m["log_rmse"]) == (0.0, 0.0, 0.0, 0.0)
    assert (m["delta_1"], m["delta_2"], m["delta_3"]) == (1.0, 1.0, 1.0)
    assert m["valid_pixels"] == g.size - 5
    assert (r.scale, r.shift) == (1.0, 0.0)


def _reference(p, g):
    """Metrics computed independently in float64 numpy."""
    p, g = p.astype(np.float64), g.astype(np.float64)
    ratio = np.maximum(np.maximum(p, 1e-5) / g, g / np.maximum(p, 1e-5))
    return {"abs_rel": np.mean(np.abs(p - g) / g), "sq_rel": np.mean((p - g) ** 2 / g),
            "rmse": np.sqrt(np.mean((p - g) ** 2)),
            "log_rmse": np.sqrt(np.mean((np.log(np.maximum(p, 1e-5)) - np.log(g)) ** 2)),
            "delta_1": np.mean(ratio < 1.25), "delta_2": np.mean(ratio < 1.25 ** 2), "delta_3": np.mean(ratio < 1.25 ** 3)}


@pytest.mark.parametrize("a,b", [(2.0, 0.05), (0.5, 0.01), (3.0, -0.1)])
def test_affine_prediction_scale_shift_zero_and_metric_errors(a, b):
    g = _gt(1)
    p = (a * g + b).astype(np.float32)
    r = score_depth(p, g, "scale&shift")
    # Adam at lr 1e-4 oscillates about the optimum: measured abs_rel <= 3.2e-5, delta_1 = 1 (float32, these seeds)
    assert r.metrics["abs_rel"] < 1e-4 and r.metrics["delta_1"] == 1.0
    assert r.scale == pytest.approx(1 / a, rel=1e-3) and r.shift == pytest.approx(-b / a, abs=2e-3)
    m = score_depth(p, g, "metric").metrics
    ref = _reference(p, g)
    for k, v in ref.items():
        assert m[k] == pytest.approx(v, rel=1e-5), k  # float32 means vs float64: measured <= 1e-6 relative


def test_scale_mode_weiszfeld_recovers_a_pure_scale_in_float64():
    g = _gt(2)
    p = (g / 3.0).astype(np.float32)
    r = score_depth(p, g, "scale")
    assert r.scale == pytest.approx(3.0, rel=1e-6)
    assert r.metrics["abs_rel"] < 1e-6  # float32 division p = g/3 then x3: measured 3e-8


def test_weiszfeld_matches_hand_iterations():
    p = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    g = torch.tensor([2.5, 3.0, 9.0, 15.0], dtype=torch.float64)
    s = g.mean() / p.mean()
    for _ in range(10):
        w = 1 / ((s * p - g).abs() + 1e-8)
        s = (w * p * g).sum() / (w * p * p).sum()
    assert fit_scale(p.float(), g.float()) == pytest.approx(float(s), rel=1e-6)


def test_median_is_the_lower_middle_value():
    p = torch.tensor([1.0, 2.0, 3.0, 4.0])
    g = torch.tensor([10.0, 20.0, 30.0, 40.0])
    assert median_ratio(p, g) == 10.0  # lower medians 20 / 2 (numpy's 25 / 2.5 is also 10: use uneven values)
    g2 = torch.tensor([10.0, 20.0, 50.0, 40.0])
    assert median_ratio(p, g2) == 20.0 / 2.0  # sorted g2 = 10 20 40 50 -> lower middle 20 (numpy: 30)
    r = score_depth(np.array([[[1.0, 2.0, 3.0, 4.0]]], np.float32), np.array([[[10.0, 20.0, 50.0, 40.0]]], np.float32),
                    "median")
    assert r.scale == 10.0


def test_lad_loop_order_and_small_inputs():
    p = torch.linspace(1, 5, 50)
    s, t, steps = fit_scale_shift(p, p.clone(), 1.0)
    # exact fit: the loss is 0 before step 1 and 2; the check runs after the step, so the loop breaks after step 2
    assert (s, t, steps) == (1.0, 0.0, 2)
    s, t, steps = fit_scale_shift(p[:9], 2 * p[:9], 1.7)
    assert (s, t, steps) == (pytest.approx(1.7), 0.0, 0)  # fewer than 10 usable pixels: the start is returned
    s, t, steps = fit_scale_shift(p, 2 * p + 1, 1.0, max_iters=7)
    assert steps == 7 and s > 1.0 and t > 0.0  # moves toward (2, 1) by about lr per step


def test_lad_zeroes_tiny_predictions_before_the_fit():
    g = np.full((1, 1, 20), 4.0, np.float32)
    p = np.full((1, 1, 20), 2.0, np.float32)
    p[0, 0, :5] = 9e-6  # below 1e-5: set to 0, so its aligned value is exactly t (else t + s * 9e-6 = t + 1.8e-5)
    r = score_depth(p, g, "scale&shift")
    assert r.scale == pytest.approx(2.0, abs=0.01)  # start s = median(g) / median(p) = 2 (lower median)
    t = np.float32(r.shift)
    assert r.error[0, 0, 0] == np.float32(abs(t - np.float32(4.0)) / np.float32(4.0))


def test_valid_range_and_clipping():
    g = np.array([[[60.0, 10.0, 70.0, 0.0, -1.0]]], np.float32)
    p = np.array([[[100.0, 10.0, 5.0, 3.0, 3.0]]], np.float32)
    r = score_depth(p, g, "metric", max_depth=70.0, clip_max=70.0)
    assert r.metrics["valid_pixels"] == 2  # 70 is not < 70; 0 and -1 have no measurement
    assert r.metrics["abs_rel"] == pytest.approx((10.0 / 60.0) / 2)  # 100 clipped to 70
    assert np.isnan(r.error[0, 0, 2:]).all() and r.error[0, 0, 0] == pytest.approx(10 / 60)
    r2 = score_depth(p, g, "metric", max_depth=70.0, clip_max=None)
    assert r2.metrics["abs_rel"] == pytest.approx((40.0 / 60.0) / 2)


def test_no_valid_pixels_gives_nulls():
    r = score_depth(np.ones((1, 2, 2), np.float32), np.zeros((1, 2, 2), np.float32), "scale&shift")
    assert r.metrics["valid_pixels"] == 0 and r.metrics["abs_rel"] is None


def test_dataset_average_is_weighted_by_valid_pixels():
    rows = [{"abs_rel": 0.1, "sq_rel": 0, "rmse": 1, "log_rmse": 0, "delta_1": 1, "delta_2": 1, "delta_3": 1,
             "valid_pixels": 300},
            {"abs_rel": 0.5, "sq_rel": 0, "rmse": 3, "log_rmse": 0, "delta_1": 0, "delta_2": 1, "delta_3": 1,
             "valid_pixels": 100},
            {"abs_rel": None, "valid_pixels": 0}]
    avg = weighted_average(rows)
    assert avg["abs_rel"] == pytest.approx((0.1 * 300 + 0.5 * 100) / 400)
    assert avg["rmse"] == pytest.approx(1.5) and avg["delta_1"] == pytest.approx(0.75)
    assert avg["valid_pixels"] == 400


def test_resize_is_opencv_bicubic():
    import cv2

    x = np.random.default_rng(0).uniform(1, 2, (6, 8)).astype(np.float32)
    y = resize_to(x, (12, 16))
    assert y.shape == (12, 16) and y.dtype == np.float32
    assert np.array_equal(y, cv2.resize(x, (16, 12), interpolation=cv2.INTER_CUBIC))
    assert resize_to(x, (6, 8)) is not None and np.array_equal(resize_to(x, (6, 8)), x)
