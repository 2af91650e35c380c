"""TrackHead: checkpoint keys/shapes, a tiny forward pass, and the behaviour of its building blocks."""

from __future__ import annotations

import math

import pytest
import torch

from model.streamvggt.heads.track_head import TrackHead
from model.streamvggt.heads.track_modules.blocks import CorrBlock, EfficientUpdateFormer
from model.streamvggt.heads.track_modules.utils import (
    flow_embedding,
    grid_sincos_pos_embed,
    sample_features4d,
)
from tests.model.reference import checkpoint_shapes


def test_keys_and_shapes_match_checkpoint(fixtures_dir):
    with torch.device("meta"):
        head = TrackHead(dim_in=2048)
    got = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    expected = checkpoint_shapes(fixtures_dir, "track_head")
    assert len(expected) == 394
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    assert sum(math.prod(s) for s in got.values()) == 65_941_396
    assert "tracker.updateformer.virual_tracks" in got  # the checkpoint's spelling


def tiny_track_head(**kw) -> TrackHead:
    args = dict(dim_in=64, features=16, iters=3, corr_levels=3, corr_radius=2, hidden_size=32,
                out_channels=(8, 16, 32, 32), intermediate_layer_idx=(0, 1, 2, 3), tracker_depth=2, num_heads=4)
    args.update(kw)
    return TrackHead(**args)


def test_tiny_forward_shapes_and_query_frame_fixed():
    torch.manual_seed(0)
    B, S, N, H, W = 2, 3, 5, 56, 70
    head = tiny_track_head().eval()
    P = 5 + (H // 14) * (W // 14)
    tokens = [torch.randn(B, S, P, 64) for _ in range(4)]
    query = torch.rand(B, N, 2) * torch.tensor([W - 1.0, H - 1.0])
    with torch.no_grad():
        coords, vis, conf = head(tokens, torch.zeros(B, S, 3, H, W), 5, query_points=query)
        coords2, _, _ = head(tokens, (B, S, 3, H, W), 5, query_points=query, iters=2, frames_chunk_size=1)
    assert len(coords) == 3 and all(c.shape == (B, S, N, 2) for c in coords)
    assert vis.shape == (B, S, N) and conf.shape == (B, S, N)
    assert ((vis > 0) & (vis < 1)).all() and ((conf > 0) & (conf < 1)).all()
    for c in coords:
        torch.testing.assert_close(c[:, 0], query)  # the query frame keeps the query points
        assert torch.isfinite(c).all()
    assert len(coords2) == 2
    torch.testing.assert_close(coords2[1], coords[1], rtol=1e-4, atol=1e-4)  # chunking does not matter
    assert not torch.allclose(coords[-1][:, 1:], query[:, None].expand(B, S - 1, N, 2))  # later frames move
    head_noconf = tiny_track_head(predict_conf=False).eval()
    assert not hasattr(head_noconf.tracker, "conf_predictor")
    with torch.no_grad():
        _, _, none = head_noconf(tokens, (B, S, 3, H, W), 5, query_points=query)
    assert none is None


def test_corr_block_window_values_and_order():
    torch.manual_seed(0)
    B, S, N, C, H, W = 1, 2, 3, 4, 8, 8
    fmaps = torch.randn(B, S, C, H, W)
    targets = torch.randn(B, S, N, C)
    coords = torch.tensor([[3.0, 4.0], [2.0, 5.0], [4.0, 3.0]]).expand(B, S, N, 2).contiguous()
    block = CorrBlock(fmaps, num_levels=2, radius=1)
    out = block.corr_sample(targets, coords)
    assert out.shape == (B, S, N, 2 * 9)
    # window element (i, j) of level 0 = <target, fmap at (x + d_i, y + d_j)> / sqrt(C), d = (-1, 0, 1)
    for n in range(N):
        x, y = coords[0, 0, n].long().tolist()
        for i, dx in enumerate((-1, 0, 1)):
            for j, dy in enumerate((-1, 0, 1)):
                expected = (targets[0, 1, n] * fmaps[0, 1, :, y + dy, x + dx]).sum() / math.sqrt(C)
                torch.testing.assert_close(out[0, 1, n, i * 3 + j], expected, atol=1e-5, rtol=1e-5)
    # level 1 samples the 2x average-pooled maps at coords / 2
    pooled = torch.nn.functional.avg_pool2d(fmaps[0], 2)
    centre = out[0, 0, 0, 9 + 4]  # point 0 at (3,4)/2 = (1.5, 2): halfway between columns 1 and 2 of row 2
    manual = 0.5 * ((targets[0, 0, 0] * pooled[0, :, 2, 1]).sum() + (targets[0, 0, 0] * pooled[0, :, 2, 2]).sum())
    torch.testing.assert_close(centre, manual / math.sqrt(C), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="too small"):
        CorrBlock(fmaps, num_levels=5, radius=1)


def test_sampling_and_embeddings():
    feats = torch.randn(2, 3, 5, 6)
    pts = torch.tensor([[[0.0, 0.0], [5.0, 4.0], [2.0, 1.0]], [[1.0, 3.0], [2.5, 3.0], [4.0, 0.0]]])
    s = sample_features4d(feats, pts)
    assert s.shape == (2, 3, 3)
    torch.testing.assert_close(s[0, 1], feats[0, :, 4, 5])
    torch.testing.assert_close(s[1, 1], 0.5 * (feats[1, :, 3, 2] + feats[1, :, 3, 3]))
    # flow embedding interleaves sin/cos with frequencies 2k * 1000 / dim, x part then y part
    xy = torch.tensor([[[0.3, -0.7]]])
    emb = flow_embedding(xy, 8)
    assert emb.shape == (1, 1, 16)
    freqs = torch.arange(0, 8, 2).float() * (1000.0 / 8)
    torch.testing.assert_close(emb[0, 0, 0:8:2], torch.sin(0.3 * freqs))
    torch.testing.assert_close(emb[0, 0, 9:16:2], torch.cos(-0.7 * freqs))
    pe = grid_sincos_pos_embed(8, 3, 4)
    assert pe.shape == (1, 8, 3, 4)
    torch.testing.assert_close(pe[0, 0, 2, 3], torch.sin(torch.tensor(3.0)))  # first half encodes x (column)
    torch.testing.assert_close(pe[0, 4, 2, 3], torch.sin(torch.tensor(2.0)))  # second half encodes y (row)


def test_update_former_shapes_and_track_permutation_equivariance():
    torch.manual_seed(0)
    former = EfficientUpdateFormer(space_depth=2, time_depth=2, input_dim=12, hidden_size=16, num_heads=4,
                                   output_dim=6, num_virtual_tracks=4).eval()
    x = torch.randn(2, 5, 3, 12)
    with torch.no_grad():
        y = former(x)
        perm = torch.tensor([3, 0, 4, 1, 2])
        y_perm = former(x[:, perm])
    assert y.shape == (2, 5, 3, 6)
    torch.testing.assert_close(y_perm, y[:, perm], atol=1e-5, rtol=1e-5)


def test_matches_the_official_tiny_reference_exactly(fixtures_dir):
    """The official code's outputs on seeded random weights (shared/fixtures/trackhead_tiny_reference.*): the
    same coordinates bit for bit, visibility and confidence to fp32 rounding."""
    import json

    from safetensors.torch import load_file

    cfg = json.loads((fixtures_dir / "trackhead_tiny_reference.json").read_text())["config"]
    ref = load_file(str(fixtures_dir / "trackhead_tiny_reference.safetensors"))
    head = TrackHead(dim_in=cfg["dim_in"], patch_size=cfg["patch_size"], features=cfg["features"],
                     iters=cfg["iters"], hidden_size=cfg["hidden_size"],
                     out_channels=tuple(cfg["dpt_out_channels"])).eval()
    weights = {k[len("weights."):]: v for k, v in ref.items() if k.startswith("weights.")}
    head.load_state_dict(weights, strict=True)
    tokens = [torch.zeros(1, cfg["frames"], ref["inputs.tokens.4"].shape[2], cfg["dim_in"])
              for _ in range(cfg["layers"])]
    for i in (4, 11, 17, 23):
        tokens[i] = ref[f"inputs.tokens.{i}"]
    torch.set_num_threads(1)
    with torch.no_grad():
        fmap = head.feature_extractor(tokens, ref["inputs.images"], cfg["patch_start_idx"])
        coords, vis, conf = head(tokens, ref["inputs.images"], cfg["patch_start_idx"],
                                 query_points=ref["inputs.query_points"])
    torch.testing.assert_close(fmap[:, 0], ref["outputs.feature_maps.frame0"], rtol=1e-5, atol=1e-5)
    assert len(coords) == cfg["iters"]
    for i, c in enumerate(coords):
        # measured max |diff| 0 with ATEN_CPU_CAPABILITY=default, avx2 and avx512 (the fixture states 0 too)
        assert torch.equal(c, ref[f"outputs.coords.{i}"]), (i, (c - ref[f"outputs.coords.{i}"]).abs().max())
    torch.testing.assert_close(vis, ref["outputs.vis"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(conf, ref["outputs.conf"], rtol=1e-6, atol=1e-6)
