"""Relevancy on hand-made embeddings, mask post-processing and level choice."""

from __future__ import annotations

import math

import pytest
import torch

from eval.query.masks import (
    choose_level,
    cleanup_mask,
    masks_from_relevancy,
    normalize_relevancy,
    smooth_relevancy,
)
from eval.query.relevancy import CANONICAL_NEGATIVES, RelevancyModel, lerf_relevancy
from model.text import HashTextEncoder


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_pairwise_softmax_min_hand_values():
    q = torch.tensor([[1.0, 0.0, 0.0]])
    negs = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    feats = torch.tensor([[1.0, 0.0, 0.0],        # q.f = 1, negs 0, 0
                          [0.6, 0.8, 0.0],        # q.f = .6, negs .8, 0 -> worst .8
                          [0.0, 0.0, 0.0]])       # zero feature -> 0.5
    r = lerf_relevancy(feats, q, negs)
    expected = torch.tensor([[_sig(10 * 1.0), _sig(10 * (0.6 - 0.8)), 0.5]])
    torch.testing.assert_close(r, expected)
    # equals min over negatives of softmax(10 [s_pos, s_neg])[0]
    s = feats @ torch.cat([q, negs]).T
    manual = torch.stack([torch.softmax(10 * torch.stack([s[:, 0], s[:, k]], -1), -1)[:, 0] for k in (1, 2)]).min(0)
    torch.testing.assert_close(r[0], manual.values)


def test_relevancy_shapes_chunking_and_decode():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 5, 7, 8, generator=g)  # (L, H, W, D)
    q = torch.nn.functional.normalize(torch.randn(2, 8, generator=g), dim=-1)
    n = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    full = lerf_relevancy(feats, q, n)
    assert full.shape == (2, 3, 5, 7)
    torch.testing.assert_close(lerf_relevancy(feats, q, n, chunk=13), full)
    assert lerf_relevancy(feats[0], q[0], n).shape == (5, 7)
    # decode: a k=2 field lifted by a fixed linear map equals relevancy of the lifted field
    lift = torch.randn(2, 8, generator=g)
    z = torch.randn(5, 7, 2, generator=g)
    torch.testing.assert_close(lerf_relevancy(z, q, n, decode=lambda x: x @ lift, chunk=9),
                               lerf_relevancy(z @ lift, q, n))
    with pytest.raises(ValueError, match="autoencoder"):
        lerf_relevancy(z, q, n)


def test_relevancy_model_uses_canonical_negatives():
    seen = []

    def enc(texts):
        seen.extend(texts)
        return HashTextEncoder(dim=64).encode_text(texts)

    m = RelevancyModel(enc)
    assert tuple(seen) == CANONICAL_NEGATIVES
    f = enc(["red apple", "glass cup"])  # two pixels
    r = m.relevancy(f, ["red apple"])
    assert r.shape == (1, 2) and r[0, 0] > 0.99 and r[0, 1] < r[0, 0]
    m.relevancy(f, ["red apple"])
    assert seen.count("red apple") == 2  # once by the test, once cached by the model


def test_smoothing_normalisation_and_cleanup():
    r = torch.zeros(40, 40)
    r[10:30, 10:30] = 1.0
    s = smooth_relevancy(r)
    # centre of a 29x29 window over a 20x20 block: pooled = 400/841 -> 0.5*(400/841 + 1)
    assert s[20, 20].item() == pytest.approx(0.5 * (400 / 841 + 1.0), abs=1e-6)
    # corner (0,0): window rows/cols 0..14 = 225 valid px (count_include_pad=False), 5x5 = 25 ones inside
    assert s[0, 0].item() == pytest.approx(0.5 * 25 / 225, abs=1e-6)
    n = normalize_relevancy(torch.tensor([[0.0, 0.25, 0.75, 1.0]]))
    torch.testing.assert_close(n, torch.tensor([[0.0, 0.0, 0.5, 1.0]]))
    m = torch.zeros(20, 20, dtype=torch.bool)
    m[5:15, 5:15] = True
    m[0, 19] = True  # isolated speck vanishes
    c = cleanup_mask(m)
    assert not c[0, 19] and c[10, 10]
    # 7x7 around the square's corner (5,5): 4x4 = 16 of 49 inside -> False; edge midpoint (5,10): 4*7 = 28/49 -> True
    m2 = torch.zeros(20, 20, dtype=torch.bool)
    m2[5:15, 5:15] = True
    c2 = cleanup_mask(m2)
    assert not c2[5, 5] and c2[5, 10]


def test_pool_matches_avgpool2d_exactly():
    x = torch.rand(2, 3, 33, 41)
    for k in (29, 7):
        ref = torch.nn.AvgPool2d(k, stride=1, padding=k // 2, count_include_pad=False)(x.reshape(6, 1, 33, 41))
        sm = smooth_relevancy(x, k)
        assert torch.equal(sm, 0.5 * (ref.reshape(2, 3, 33, 41) + x))


def test_masks_and_level_choice():
    r = torch.full((3, 40, 40), 0.5)
    r[0, 12:18, 12:18] = 1.0   # small blob: smoothed max lower
    r[1, 5:35, 5:35] = 1.0     # large blob: highest smoothed max
    r[2, 20:30, 20:30] = 0.9
    lm = masks_from_relevancy(r)
    assert lm.level == 1 == choose_level(lm.smoothed)
    assert lm.scores.argmax().item() == 1
    mask = lm.chosen_clean
    assert mask[20, 20] and not mask[2, 2] and mask.sum() > 0.9 * 900
    assert lm.chosen_raw.shape == (40, 40)
    # ties go to the first level
    assert choose_level(torch.ones(3, 4, 4)) == 0


def test_cleanup_border_ties_match_published_avgpool():
    # published: AvgPool2d(7, stride 1, padding 3, count_include_pad=False) then > 0.5; at a border pixel whose
    # window is exactly half full the result is exactly 0.5 and must stay False
    import torch.nn.functional as F

    from eval.query.masks import cleanup_mask

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        m = torch.rand(60, 80, generator=g) > 0.5
        ref = F.avg_pool2d(m[None, None].float(), 7, 1, 3, count_include_pad=False)[0, 0] > 0.5
        assert torch.equal(cleanup_mask(m), ref)
