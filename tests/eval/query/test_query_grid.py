"""eval.query's default latent-grid path vs ``--exact``; the batched mask post-processing vs eval.query.masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval.query.batch_masks import choice_margin, frame_masks
from eval.query.masks import masks_from_relevancy, normalize_relevancy
from eval.query.relevancy import LatentGrid, lerf_relevancy
from inference.outputs import write_fields
from inference.visualize import load_png
from model.autoencoder import FeatureAutoencoder

H, W, T = 72, 96, 4


def bias_free_autoencoder(seed: int = 0) -> FeatureAutoencoder:
    """A random 512 <-> 3 autoencoder whose decoder has no biases (a random decoder with biases maps every latent
    to nearly the same direction), so different latent directions decode to clearly different features."""
    torch.manual_seed(seed)
    ae = FeatureAutoencoder().eval()
    with torch.no_grad():
        for m in ae.decoder:
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.kaiming_normal_(m.weight)
                m.bias.zero_()
    return ae


def test_frame_masks_equal_masks_from_relevancy():
    g = torch.Generator().manual_seed(0)
    r = F.avg_pool2d(torch.rand(10, 3, H, W, generator=g), 5, 1, 2)
    r[1, 1] = r[1, 0]  # exact tie: the first level wins
    r[1, 2] = 0.5 * r[1, 0]
    r[2, 2] = r[2, 0] + 1e-7  # ties within float32 rounding
    r[2, 1] = 0.1
    r[3] = 0.3 + 1e-5 * torch.rand(3, H, W, generator=g)  # near flat
    r[4] = 0.3  # flat
    r[5] = 0.2
    r[5, :, 10:20, 5:15] = 0.9  # the same plateau on every level
    r[6] = 0.2
    r[6, 0, :3, :3] = 0.99
    r[6, 2, -3:, -3:] = 0.99  # maxima in opposite corners (summed in another order)
    fm = frame_masks(r)
    assert fm.ties >= 6
    fixed = frame_masks(r, level=1)
    loose = frame_masks(r, exact_ties=False, exact_pool=True)  # near ties told apart by the separable pool
    approx = frame_masks(r, exact_ties=False)  # ... and the chosen level smoothed by it too
    assert torch.equal(approx.level, loose.level)
    for b in range(r.shape[0]):
        lm = masks_from_relevancy(r[b])
        li = lm.level
        assert int(fm.level[b]) == li
        assert torch.equal(fm.smoothed[b], lm.smoothed[li]) and torch.equal(fm.raw[b], lm.raw[li])
        assert torch.equal(fm.clean[b], lm.clean[li]) and torch.equal(fm.scores[b], lm.scores[li])
        assert torch.equal(fm.normalized[b], normalize_relevancy(lm.smoothed[li]))
        assert torch.equal(fixed.clean[b], lm.clean[1]) and torch.equal(fixed.scores[b], lm.scores[1])
        lj = int(loose.level[b])
        assert torch.equal(loose.clean[b], lm.clean[lj]) and torch.equal(loose.scores[b], lm.scores[lj])
        assert lm.scores[li] - lm.scores[lj] <= 1e-6  # another level only on a near tie
        bound = choice_margin(r[b, lj].abs().max())
        assert (approx.smoothed[b] - lm.smoothed[lj]).abs().max() <= bound  # the separable pool's rounding only
        assert torch.equal(approx.scores[b], approx.smoothed[b].amax())
        if b in (3, 4):  # (near-)flat: min-max normalisation would magnify rounding, so the published pool runs
            assert torch.equal(approx.smoothed[b], lm.smoothed[lj]) and torch.equal(approx.clean[b], lm.clean[lj])
        else:  # a pixel flips only where rounding crosses the threshold (measured: none here, on every kernel path)
            assert (approx.clean[b] == lm.clean[lj]).float().mean() >= 0.999, b


@pytest.mark.parametrize("k", [1, 2, 3])
def test_latent_grid_interpolation(k):
    ae = bias_free_autoencoder()

    def decode(z):
        return ae.decode(torch.cat([z, torch.ones(z.shape[0], 3 - k)], 1))

    grid = LatentGrid(decode, -torch.ones(k), torch.ones(k), size=9)
    text = F.normalize(torch.randn(4, 512, generator=torch.Generator().manual_seed(1)), dim=-1)
    vol = grid.volume(text[:1], text[1:])
    idx = torch.randint(0, 9, (50, k), generator=torch.Generator().manual_seed(2))
    nodes = -1 + 2 * idx.float() / 8
    with torch.no_grad():
        exact = lerf_relevancy(nodes, text[:1], text[1:], decode=decode)
    assert torch.allclose(vol.relevancy(nodes), exact, atol=1e-5)  # exact at the grid nodes
    assert 0 < grid.decoded < 9 ** k or k == 1  # only the cells holding latents are decoded
    mid = torch.rand(200, k, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        exact = lerf_relevancy(mid, text[:1], text[1:], decode=decode)
    assert (vol.relevancy(mid) - exact).abs().max() < 0.05
    # a dense grid gives the same values; a second text set reuses the decoded points
    dense = LatentGrid(decode, -torch.ones(k), torch.ones(k), size=9)
    dense.decode_all()
    assert torch.allclose(dense.volume(text[:1], text[1:]).relevancy(mid), vol.relevancy(mid), atol=1e-6)
    n = grid.decoded
    grid.volume(text[1:2], text[2:]).relevancy(mid)
    assert grid.decoded == n


def labels(t: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    lab = np.zeros((H, W), np.int64)
    lab[(yy - 24) ** 2 + (xx - 24 - 4 * t) ** 2 < 16 ** 2] = 1  # "red ball"
    lab[40:68, 50:90] = 2  # "green box"
    return lab


def test_grid_path_agrees_with_exact(tmp_path):
    from eval.query import main, query_fields, slug

    ae = bias_free_autoencoder()
    gen = torch.Generator().manual_seed(4)
    lat = F.normalize(torch.randn(6, 3, generator=gen), dim=-1)  # 0 table, 1 ball, 2 box, 3.. negatives
    for t in range(T):
        lab = torch.from_numpy(labels(t))
        fields = {}
        for li, lvl in enumerate(("small", "middle", "large")):
            x = lat[lab].permute(2, 0, 1)[None]
            x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)[0]  # soft edges
            fields[lvl] = x + (0.02 + 0.01 * li) * torch.randn(x.shape, generator=gen)
        write_fields(tmp_path / "inf" / "fields" / f"{t + 1:06d}.safetensors", fields, {"frame_key": f"{t + 1:06d}"})
    with torch.no_grad():
        emb = ae.decode(lat)
    names = {"red ball": 1, "green box": 2, "object": 3, "things": 4, "stuff": 5, "texture": 5}

    def encode_text(texts):
        return torch.stack([emb[names[t]] for t in texts])

    def decode(z):
        return ae.decode(z)

    queries = ["red ball", "green box"]
    query_fields(tmp_path / "inf", queries, tmp_path / "g", encode_text, decode, video=False, grid_size=24)
    query_fields(tmp_path / "inf", queries, tmp_path / "e", encode_text, decode, video=False, exact=True)
    same = total = 0
    for q in queries:
        for t in range(T):
            key = f"{t + 1:06d}"
            mg = load_png(tmp_path / "g" / slug(q) / "mask" / f"{key}.png") > 127
            me = load_png(tmp_path / "e" / slug(q) / "mask" / f"{key}.png") > 127
            same += int((mg == me).sum())
            total += mg.size
            gt = labels(t) == names[q]
            assert (me & gt).sum() / (me | gt).sum() > 0.7  # the query finds its object
    print("agreement", same / total)
    assert same / total >= 0.995, same / total

    # the CLI: default (grid) and --exact both run on a saved autoencoder
    ae.save(tmp_path / "ae")
    for flag in ([], ["--exact"]):
        out = tmp_path / ("cli" + "".join(flag))
        main(["--fields", str(tmp_path / "inf"), "--text", "red ball", "--hash-text", "--autoencoder",
              str(tmp_path / "ae"), "--no-video", "--no-ply", "--out", str(out), "--device", "cpu", "-q", *flag])
        assert len(json.loads((out / "red_ball" / "summary.json").read_text())["frames"]) == T


def test_bench_query_smoke(tmp_path):
    """The benchmark's code path on a tiny synthetic folder (so it cannot rot)."""
    from benchmarks.bench_query import main

    out = main(["--synthetic", "--frames", "3", "--width", "64", "--height", "48", "--repeat", "1",
                "--work", str(tmp_path), "--json", str(tmp_path / "r.json"), "--min-agreement", "0.9"])
    assert out["frames"] == 3 and out["exact_s"] > 0 and len(out["grid_s"]) == 1
    assert out["pixel_agreement"] > 0.9 and (tmp_path / "r.json").is_file()
