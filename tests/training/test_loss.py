import torch

from training.loss import LossWeights, compute_loss, masked_feature_loss


def test_cosine_is_over_the_feature_axis():
    t = torch.randn(1, 3, 4, 5)
    mask = torch.ones(1, 4, 5, dtype=torch.bool)
    _, l1, cos = masked_feature_loss(2 * t, t, mask)
    assert cos.abs().max() < 1e-6 and l1.item() > 0  # same direction per pixel: no cosine loss
    _, _, cos = masked_feature_loss(-t, t, mask)
    assert torch.allclose(cos, torch.tensor([2.0]))


def test_masked_pixels_are_ignored_and_mean_is_over_valid_pixels():
    t = torch.zeros(1, 3, 4, 4)
    p = torch.zeros(1, 3, 4, 4)
    p[..., 0, 0] = 100.0  # error only at a masked-out pixel
    p[..., 1, 1] = 1.0  # error 1 on each channel at one valid pixel
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = False
    _, l1, _ = masked_feature_loss(p, t, mask)
    assert torch.allclose(l1, torch.tensor([1.0 / 15]))
    _, l1, cos = masked_feature_loss(p, t, torch.zeros_like(mask))
    assert l1.item() == 0 and cos.item() == 0


def _batch(b, k=3, h=6, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"lang_target": torch.randn(b, 3, k, h, w, generator=g),
            "lang_mask": torch.rand(b, 3, h, w, generator=g) > torch.linspace(0.1, 0.9, b).view(b, 1, 1, 1),
            "frame": torch.rand(b, 3, h, w, generator=g)}


def test_batch_loss_is_mean_of_per_sample_losses():
    batch = _batch(4)
    out = {"lang": {lvl: torch.randn(4, 3, 6, 7) for lvl in ("small", "middle", "large")},
           "rgb": torch.rand(4, 3, 6, 7)}
    full = compute_loss(out, batch)["loss"]
    halves = []
    for sl in (slice(0, 2), slice(2, 4)):
        sub_out = {"lang": {k: v[sl] for k, v in out["lang"].items()}, "rgb": out["rgb"][sl]}
        halves.append(compute_loss(sub_out, {k: v[sl] for k, v in batch.items()})["loss"])
    assert torch.allclose(full, (halves[0] + halves[1]) / 2, atol=1e-6)


def test_weights_and_rgb_terms():
    batch = _batch(2)
    out = {"lang": {lvl: batch["lang_target"][:, i].clone() for i, lvl in enumerate(("small", "middle", "large"))},
           "rgb": batch["frame"] + 0.5}
    t = compute_loss(out, batch, LossWeights(img=0.5))
    assert t["lang"].abs() < 1e-6
    assert torch.allclose(t["rgb"], torch.tensor(0.5 * 0.5 + 0.5 * 0.25))
    assert torch.allclose(t["loss"], t["rgb"])
    batch["video_target"] = torch.randn(2, 6, 6, 7)
    batch["video_mask"] = torch.ones(2, 6, 7, dtype=torch.bool)
    out["video"] = torch.zeros(2, 6, 6, 7)
    t2 = compute_loss(out, batch, LossWeights(video=2.0))
    assert t2["video"] > 0 and torch.allclose(t2["loss"], t["rgb"] + 2.0 * t2["video"])
