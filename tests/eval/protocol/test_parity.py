"""Evaluator parity with the published 4D LangSplat ``eval/eval.py`` on its edge cases (issue 10, point 5).

Expected values are computed here independently (reference torch modules, explicit float32 loops, literals),
never by calling the function under test a second time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.protocol.fields import FieldSource, OurFields, RendersNpyFields
from eval.protocol.metrics import mask_iou, smooth_scores, temporal_predictions, temporal_threshold, video_iou
from eval.query.masks import cleanup_mask, masks_from_relevancy, smooth_relevancy
from preprocess.annotations import CocoFrames, load_coco_masks, load_video_annotations
from utils.io import save_npy_atomic

# ---------------------------------------------------------------- 29x29 smoothing and the mask chain


def _published_chain(rel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The published per-level steps, one (H, W) map at a time: smoothed, raw mask, cleaned mask, level."""
    pool29 = torch.nn.AvgPool2d(kernel_size=29, stride=1, padding=14, count_include_pad=False)
    pool7 = torch.nn.AvgPool2d(kernel_size=7, stride=1, padding=3, count_include_pad=False)
    smoothed, raw, clean = [], [], []
    for lv in range(rel.shape[0]):
        r = rel[lv]
        s = 0.5 * (pool29(r[None, None])[0, 0] + r)
        out = s - torch.min(s)
        out = out / (torch.max(out) + 1e-9)
        out = torch.clip(out * (1.0 - (-1.0)) + (-1.0), 0, 1)
        m = (out > 0.4).to(torch.uint8)
        c = (pool7(m.float()[None, None])[0, 0] > 0.5).to(torch.uint8)
        smoothed.append(s)
        raw.append(m.bool())
        clean.append(c.bool())
    sm = torch.stack(smoothed)
    scores = torch.stack([x.max() for x in smoothed])
    return sm, torch.stack(raw), torch.stack(clean), int(torch.argmax(scores))


@pytest.mark.parametrize("shape", [(3, 37, 45), (3, 10, 12), (2, 64, 31)])
def test_smoothing_equals_avgpool2d_bit_for_bit_on_random_maps(shape):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(*shape, generator=g)
    ref = torch.nn.AvgPool2d(29, stride=1, padding=14, count_include_pad=False)(x[:, None])[:, 0]
    assert torch.equal(smooth_relevancy(x), 0.5 * (ref + x))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smoothing_and_masks_exact_on_near_flat_maps(seed):
    """Constant + 1e-7 noise (float32): min-max normalisation magnifies any last-bit difference of the pool."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.full((3, 48, 56), 0.37) + 1e-7 * torch.randn(3, 48, 56, generator=g)).float()
    ref = torch.nn.AvgPool2d(29, stride=1, padding=14, count_include_pad=False)(x[:, None])[:, 0]
    assert torch.equal(smooth_relevancy(x), 0.5 * (ref + x))
    sm, raw, clean, level = _published_chain(x)
    got = masks_from_relevancy(x)
    assert torch.equal(got.smoothed, sm)
    assert torch.equal(got.raw, raw) and torch.equal(got.clean, clean) and got.level == level


def test_cleanup_equals_published_smooth_cuda():
    g = torch.Generator().manual_seed(3)
    m = torch.rand(30, 33, generator=g) > 0.5
    ref = torch.nn.AvgPool2d(7, stride=1, padding=3, count_include_pad=False)(m.float()[None, None])[0, 0] > 0.5
    assert torch.equal(cleanup_mask(m), ref)


# ---------------------------------------------------------------- renders_npy mapping


def _write_frame(dirs, vdir, t, levels, video):
    for d, arr in zip(dirs, levels, strict=True):
        save_npy_atomic(np.asarray(arr, np.float32), d / "renders_npy" / f"{t:05d}.npy")
    save_npy_atomic(np.asarray(video, np.float32), vdir / "renders_npy" / f"{t:05d}.npy")


def _unmapped(arr: np.ndarray) -> np.ndarray:
    return np.asarray(arr, np.float32) * np.float32(2.0) - np.float32(1.0)


def test_renders_mapped_only_when_min_over_three_levels_positive(tmp_path):
    rng = np.random.default_rng(0)
    dirs = [tmp_path / f"s_{i}" for i in (1, 2, 3)]
    vdir = tmp_path / "s_video"
    pos = [rng.uniform(0.05, 0.95, (4, 5, 3)).astype(np.float32) for _ in range(3)]
    # frame 0: all three levels > 0 -> all mapped
    _write_frame(dirs, vdir, 0, pos, rng.uniform(0.1, 0.9, (4, 5, 6)))
    # frame 1: only the third level touches 0 -> none mapped (not only that level)
    f1 = [pos[0], pos[1], pos[2].copy()]
    f1[2][1, 2, 0] = 0.0
    _write_frame(dirs, vdir, 1, f1, rng.uniform(0.1, 0.9, (4, 5, 6)))
    # frame 2: one negative value in the first level -> none mapped
    f2 = [pos[0].copy(), pos[1], pos[2]]
    f2[0][0, 0, 1] = -0.25
    _write_frame(dirs, vdir, 2, f2, rng.uniform(0.1, 0.9, (4, 5, 6)))

    ren = RendersNpyFields(dirs, vdir)
    assert torch.equal(ren.semantic(0), torch.from_numpy(np.stack([_unmapped(a) for a in pos])))
    assert torch.equal(ren.semantic(1), torch.from_numpy(np.stack(f1)))
    assert torch.equal(ren.semantic(2), torch.from_numpy(np.stack(f2)))


def test_video_render_never_mapped(tmp_path):
    dirs = [tmp_path / f"s_{i}" for i in (1, 2, 3)]
    vdir = tmp_path / "s_video"
    video = np.random.default_rng(1).uniform(0.2, 0.8, (4, 5, 6)).astype(np.float32)  # strictly positive
    _write_frame(dirs, vdir, 0, [np.full((4, 5, 3), 0.5)] * 3, video)
    ren = RendersNpyFields(dirs, vdir)
    assert torch.equal(ren.video(0), torch.from_numpy(video))
    assert torch.equal(ren.semantic(0), torch.zeros(3, 4, 5, 3))  # the levels themselves: 0.5 * 2 - 1


# ---------------------------------------------------------------- empty-set conventions


def test_iou_of_two_empty_masks():
    empty = np.zeros((3, 4), bool)
    # published: torch.sum(inter) / torch.sum(union) = 0 / 0 -> NaN; ours (documented in eval/README.md): 1
    z = torch.from_numpy(empty)
    assert torch.isnan(torch.sum(torch.logical_and(z, z)) / torch.sum(torch.logical_or(z, z)))
    assert mask_iou(empty, empty) == 1.0
    full = np.ones((3, 4), bool)
    assert mask_iou(empty, full) == 0.0 and mask_iou(full, empty) == 0.0


def test_viou_without_predicted_or_annotated_frames_is_zero():
    none = np.zeros(4, bool)
    assert video_iou(none, none, np.ones(4)) == 0.0  # published: `... if iou_values else 0`
    some = np.array([0, 1, 1, 0], bool)
    assert video_iou(none, some, np.ones(4)) == 0.0
    assert video_iou(some, none, np.ones(4)) == 0.0


# ---------------------------------------------------------------- time-sensitive threshold and smoothing


def _f32_running_mean(values) -> np.float32:
    """Python ``sum(...) / len(...)`` over np.float32 scores (NumPy >= 2 rules), spelled out."""
    acc = np.float32(0.0)
    for v in values:
        acc = np.float32(acc + np.float32(v))
    return np.float32(acc / np.float32(len(values)))


def test_threshold_is_float32_running_mean_in_given_order():
    scores = [1.0] + [3e-8] * 9
    # 1 + 3e-8 rounds back to 1 in float32 every time: the running sum stays exactly 1, so the mean is 0.1f
    assert temporal_threshold(scores) == float(np.float32(1.0) / np.float32(10.0))
    assert temporal_threshold(scores) != float(np.mean(scores))  # not the float64 (pairwise) mean
    # the small ones first add up before meeting 1.0: another value, so the order matters
    rev = scores[::-1]
    assert temporal_threshold(rev) == float(_f32_running_mean(rev))
    assert temporal_threshold(rev) != temporal_threshold(scores)
    g = np.random.default_rng(2)
    r = g.uniform(-1, 1, 37).astype(np.float32)
    assert temporal_threshold(r) == float(_f32_running_mean(r))
    assert np.isnan(temporal_threshold([]))


def _published_smooth(values, weights=(0.1, 0.8, 0.1)) -> list[np.float32]:
    out = []
    for i in range(len(values)):
        if i == 0 or i == len(values) - 1:
            out.append(np.float32(values[i]))
            continue
        acc = np.float32(0.0)
        for j, w in zip((-1, 0, 1), weights, strict=True):
            acc = np.float32(acc + np.float32(np.float32(values[i + j]) * np.float32(w)))
        out.append(acc)
    return out


def test_score_smoothing_in_float32_like_published():
    r = np.random.default_rng(3).uniform(0, 1, 25).astype(np.float32)
    np.testing.assert_array_equal(smooth_scores(r), np.array(_published_smooth(r), np.float32))


@pytest.mark.parametrize("value", [0.3, 0.7, 0.123456])
def test_constant_scores_predict_like_published(value):
    """Equal raw scores: whether each smoothed value reaches the mean is decided by float32 rounding alone."""
    raw = [value] * 9
    thr = _f32_running_mean(raw)
    expected = [bool(s >= thr) for s in _published_smooth(raw)]
    np.testing.assert_array_equal(temporal_predictions(raw), expected)


class _VideoScores(FieldSource):
    """Toy semantic fields + a constant per-frame video feature whose cosine with axis 0 is ``cos[t]``."""

    def __init__(self, sem: OurFields, cos: dict[int, float]) -> None:
        self.sem, self.cos = sem, cos

    def frame_indices(self):
        return self.sem.frame_indices()

    def has_video(self):
        return True

    def semantic(self, index):
        return self.sem.semantic(index)

    def video(self, index):
        from tests.eval import synth

        v = torch.zeros(synth.H, synth.W, 4)
        v[..., 0], v[..., 1] = self.cos[index], 1.0 if self.cos[index] < 1 else 0.0
        return v


def test_evaluate_threshold_sums_in_coco_image_order(toy):
    """The published loop runs over the COCO ``images`` list: the threshold sums the scores in that order."""
    coco = load_coco_masks(toy.scene)
    order = coco.frame_indices[::-1]  # images listed last frame first
    rev = CocoFrames(masks={i: coco.masks[i] for i in order}, sizes={i: coco.sizes[i] for i in order},
                     file_names={i: coco.file_names[i] for i in order}, categories=coco.categories)
    assert rev.image_order == order
    from eval.protocol.runner import evaluate_scene

    cos = {t: (1.0 if t == 0 else 3e-8) for t in coco.frame_indices}
    qe = {"empty glass cup": torch.tensor([1.0, 0, 0, 0]), "full glass cup": torch.tensor([0, 0, 1.0, 0])}
    res = evaluate_scene(toy.scene, _VideoScores(OurFields(toy.out), cos), toy.enc, device="cpu", coco=rev,
                         video_annotations=load_video_annotations(toy.scene), video_query_embeddings=qe,
                         time_sensitive=True)
    q = {x["query"]: x for x in res["time_sensitive"]["queries"]}["empty glass cup"]
    frames = q["frames"]
    assert [f["frame"] for f in frames] == sorted(order)  # reported (and smoothed) in frame order
    by_frame = {f["frame"]: f["score"] for f in frames}
    assert q["threshold"] == float(_f32_running_mean([by_frame[i] for i in order]))
    assert q["threshold"] != float(_f32_running_mean([by_frame[i] for i in sorted(order)]))
