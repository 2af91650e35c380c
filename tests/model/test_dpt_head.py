"""DPTHead: checkpoint keys/shapes, bit-level reproduction of the reference tiny heads, chunking, precision."""

from __future__ import annotations

import pytest
import torch

from model.streamvggt.heads.dpt_head import DPTHead, ResidualConvUnit, uv_grid
from model.streamvggt.heads.head_act import activate_head, inverse_log_transform
from tests.model.reference import checkpoint_shapes, load_module_weights, load_reference_meta


@pytest.mark.parametrize("name,output_dim,activation", [("depth_head", 2, "exp"), ("point_head", 4, "inv_log")])
def test_keys_and_shapes_match_checkpoint(fixtures_dir, name, output_dim, activation):
    with torch.device("meta"):
        head = DPTHead(dim_in=2048, output_dim=output_dim, activation=activation, conf_activation="expp1")
    got = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    expected = checkpoint_shapes(fixtures_dir, name)
    assert len(expected) == 62
    assert sorted(set(expected) - set(got)) == []  # nothing missing
    assert sorted(set(got) - set(expected)) == []  # nothing extra
    assert {k: v for k, v in got.items() if v != expected[k]} == {}


def tiny_head(output_dim: int, activation: str, **kw) -> DPTHead:
    return DPTHead(dim_in=128, patch_size=14, output_dim=output_dim, activation=activation, conf_activation="expp1",
                   features=32, out_channels=(16, 32, 64, 64), intermediate_layer_idx=(0, 1, 2, 3), **kw)


@pytest.fixture(scope="module")
def reference(fixtures_dir, tiny_reference):
    return load_reference_meta(fixtures_dir), tiny_reference


@pytest.mark.parametrize("name,output_dim,activation,value_key,conf_key", [
    ("depth_head", 2, "exp", "batched.depth", "batched.depth_conf"),
    ("point_head", 4, "inv_log", "batched.world_points", "batched.world_points_conf"),
])
def test_reproduces_reference_tiny_heads(reference, name, output_dim, activation, value_key, conf_key):
    meta, tensors = reference
    assert meta["config"]["layers"] == [0, 1, 2, 3] and meta["config"]["dpt_features"] == 32
    head = load_module_weights(tiny_head(output_dim, activation).eval(), tensors, name)
    tokens = [tensors[f"batched.tokens.{i}"] for i in range(4)]
    images = tensors["inputs.images"]
    with torch.no_grad():
        values, conf = head(tokens, images, meta["patch_start_idx"])
    ref_values, ref_conf = tensors[value_key], tensors[conf_key]
    assert values.shape == ref_values.shape and conf.shape == ref_conf.shape
    # Contract: error <= 1e-4, absolute, relative to max(1, |reference|) (outputs here are O(1)). We also check a
    # tighter 5e-6: with these random weights, dropping the relu-skip quirk alone moves the depth by only 4e-5.
    err_values = ((values - ref_values).abs() / ref_values.abs().clamp(min=1)).max().item()
    err_conf = ((conf - ref_conf).abs() / ref_conf.abs().clamp(min=1)).max().item()
    assert err_values <= 1e-4 and err_conf <= 1e-4
    assert err_values <= 5e-6 and err_conf <= 5e-6, (err_values, err_conf)
    assert (conf > 1).all()


def random_tokens(B: int, S: int, H: int, W: int, dim: int = 128, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    P = 5 + (H // 14) * (W // 14)
    return [torch.randn(B, S, P, dim, generator=g) for _ in range(4)]


def test_frames_chunk_size_only_affects_memory():
    torch.manual_seed(0)
    head = tiny_head(4, "inv_log").eval()
    tokens = random_tokens(2, 3, 28, 42)
    shape = (2, 3, 3, 28, 42)
    with torch.no_grad():
        full_v, full_c = head(tokens, shape, 5, frames_chunk_size=None)
        for chunk in (1, 2):
            v, c = head(tokens, shape, 5, frames_chunk_size=chunk)
            torch.testing.assert_close(v, full_v, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(c, full_c, rtol=1e-5, atol=1e-6)
    assert full_v.shape == (2, 3, 28, 42, 3) and full_c.shape == (2, 3, 28, 42)


@pytest.mark.parametrize("down_ratio,pos_embed", [(1, False), (2, True)])
def test_feature_only_shape_and_chunking(down_ratio, pos_embed):
    torch.manual_seed(0)
    head = tiny_head(4, "inv_log", feature_only=True, down_ratio=down_ratio, pos_embed=pos_embed).eval()
    assert not hasattr(head.scratch, "output_conv2")
    assert head.scratch.output_conv1.out_channels == 32
    tokens = random_tokens(1, 3, 28, 56)
    with torch.no_grad():
        feats = head(tokens, (1, 3, 3, 28, 56), 5)
        chunked = head(tokens, (1, 3, 3, 28, 56), 5, frames_chunk_size=2)
    assert feats.shape == (1, 3, 32, 28 // down_ratio, 56 // down_ratio)
    torch.testing.assert_close(chunked, feats, rtol=1e-5, atol=1e-6)


def test_layer_indices_select_from_the_given_list():
    """A decoder holding only 4 cached layers passes them with (0,1,2,3); a full list uses (4,11,17,23)-style ids."""
    torch.manual_seed(0)
    head4 = tiny_head(2, "exp").eval()
    head_sparse = DPTHead(dim_in=128, output_dim=2, activation="exp", features=32, out_channels=(16, 32, 64, 64),
                          intermediate_layer_idx=(1, 3, 5, 7)).eval()
    head_sparse.load_state_dict(head4.state_dict())
    tokens4 = random_tokens(1, 2, 28, 28)
    full = [torch.zeros_like(tokens4[0]) for _ in range(8)]
    for i, t in zip((1, 3, 5, 7), tokens4, strict=True):
        full[i] = t
    with torch.no_grad():
        a = head4(tokens4, (1, 2, 3, 28, 28), 5)
        b = head_sparse(full, (1, 2, 3, 28, 28), 5)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)


def test_half_precision_tokens_and_half_head():
    torch.manual_seed(0)
    head = tiny_head(2, "exp").eval()
    tokens = random_tokens(1, 2, 28, 28)
    shape = (1, 2, 3, 28, 28)
    with torch.no_grad():
        ref_v, _ = head(tokens, shape, 5)
        v16, _ = head([t.half() for t in tokens], shape, 5)  # fp16 tokens, fp32 head
        assert v16.dtype == torch.float32
        torch.testing.assert_close(v16, ref_v, rtol=2e-2, atol=2e-2)
        head_bf16 = tiny_head(2, "exp").eval()
        head_bf16.load_state_dict(head.state_dict())
        head_bf16 = head_bf16.to(torch.bfloat16)
        vbf, cbf = head_bf16(tokens, shape, 5)  # fp32 tokens, bf16 head
    assert vbf.dtype == torch.bfloat16 and torch.isfinite(vbf.float()).all()
    assert ((vbf.float() - ref_v).abs() / ref_v.abs()).median() < 0.1


def test_residual_unit_skip_adds_relu_of_input():
    rcu = ResidualConvUnit(4)
    with torch.no_grad():
        rcu.conv2.weight.zero_()
        rcu.conv2.bias.zero_()
        x = torch.randn(2, 4, 5, 5)
        out = rcu(x)
    torch.testing.assert_close(out, torch.relu(x))  # the reference's in-place ReLU makes the skip relu(x)
    assert (x < 0).any()  # and our implementation does not modify its input
    assert not torch.equal(out, x)


def test_uv_grid_is_centred_and_diagonal_normalised():
    grid = uv_grid(4, 3, aspect_ratio=4 / 3)
    assert grid.shape == (3, 4, 2)
    torch.testing.assert_close(grid.mean(dim=(0, 1)), torch.zeros(2), atol=1e-6, rtol=0)
    # corners at (a/d * (w-1)/w, 1/d * (h-1)/h) with d = sqrt(a^2+1)
    d = ((4 / 3) ** 2 + 1) ** 0.5
    torch.testing.assert_close(grid[-1, -1], torch.tensor([4 / 3 / d * 3 / 4, 1 / d * 2 / 3]))
    assert grid[0, 1, 0] > grid[0, 0, 0] and grid[1, 0, 1] > grid[0, 0, 1]  # u along columns, v along rows


def test_activations():
    y = torch.linspace(-3, 3, 13)
    x = inverse_log_transform(y)
    torch.testing.assert_close(torch.sign(x) * torch.log1p(x.abs()), y)
    raw = torch.randn(2, 4, 3, 5)
    for act in ("exp", "inv_log", "norm_exp", "norm", "relu", "xy_inv_log", "sigmoid", "linear"):
        v, c = activate_head(raw, act, "expp1")
        assert v.shape == (2, 3, 5, 3) and c.shape == (2, 3, 5)
        assert (c > 1).all()
    torch.testing.assert_close(activate_head(raw, "exp", "expp0")[1], raw[:, -1].exp())
    torch.testing.assert_close(activate_head(raw, "linear", "sigmoid")[0], raw[:, :3].permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="unknown dense activation"):
        activate_head(raw, "bogus")
    with pytest.raises(ValueError, match="unknown confidence activation"):
        activate_head(raw, "exp", "bogus")
