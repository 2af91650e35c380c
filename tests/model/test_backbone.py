"""Aggregator: official tiny reference (batched + streaming tokens), streaming == batched == chunked (with and
without a window; windowed chunks attend per-frame key slices, no mask), special tokens, window semantics, cache
bounds, RoPE layout, DINOv2 patch embedding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from model.streamvggt import cache as cache_module
from model.streamvggt.aggregator import Aggregator
from model.streamvggt.cache import KVRing, frame_causal_attention
from model.streamvggt.config import StreamVGGTConfig
from model.streamvggt.dinov2 import DinoV2
from model.streamvggt.rope import RoPE2D, patch_positions
from model.streamvggt.streamvggt import StreamVGGT
from tests.model.reference import load_module_weights


def tiny_aggregator(seed: int = 0) -> Aggregator:
    torch.manual_seed(seed)
    agg = Aggregator.from_config(StreamVGGTConfig.tiny()).eval()
    with torch.no_grad():  # make special tokens matter (official init is ~1e-6)
        agg.camera_token.normal_()
        agg.register_token.normal_()
    return agg


def images(s: int = 6, b: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, s, 3, 28, 42, generator=g)


def max_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def stream(agg: Aggregator, imgs: torch.Tensor, chunk: int | list[int], window: int | None,
           cache=None) -> list[torch.Tensor]:
    """Stream ``imgs`` in chunks of ``chunk`` frames (or of the listed sizes, in turn)."""
    cache = agg.new_cache(window) if cache is None else cache
    sizes = chunk if isinstance(chunk, list) else [chunk] * -(-imgs.shape[1] // chunk)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    parts = [agg(imgs[:, a:a + n], cache=cache)[0] for a, n in zip(starts, sizes, strict=True)]
    return [torch.cat([p[layer] for p in parts], dim=1) for layer in range(agg.depth)]


def test_reference_tokens_batched_and_streaming(tiny_reference):
    ref = tiny_reference
    agg = load_module_weights(Aggregator.from_config(StreamVGGTConfig.tiny()).eval(), ref, "aggregator")
    imgs = ref["inputs.images"]
    with torch.inference_mode():
        batched, psi = agg(imgs)
        streamed = stream(agg, imgs, 1, None)
    assert psi == 5 and len(batched) == 4
    for i in range(4):
        assert ref[f"batched.tokens.{i}"].abs().max() > 0.1
        assert (batched[i] - ref[f"batched.tokens.{i}"]).abs().max() <= 1e-4
        assert (streamed[i] - ref[f"streaming.tokens.{i}"]).abs().max() <= 1e-4


@pytest.mark.parametrize("window", [None, 2])
def test_streaming_equals_batched_equals_chunked(window):
    agg = tiny_aggregator()
    imgs = images(7)
    with torch.inference_mode():
        batched, _ = agg(imgs, window=window)
        frame_by_frame = stream(agg, imgs, 1, window)
        chunks_of_3 = stream(agg, imgs, 3, window)
    assert batched[0].shape == (1, 7, 5 + 2 * 3, 128)
    with torch.inference_mode():
        some, _ = agg(imgs, window=window, layers=(1, 3))
    assert some[0] is None and some[2] is None and torch.equal(some[3], batched[3])
    assert max_err(batched, frame_by_frame) <= 1e-5
    assert max_err(batched, chunks_of_3) <= 1e-5


def test_windowed_chunks_attend_key_slices_and_equal_frame_by_frame(monkeypatch):
    model = StreamVGGT.tiny()
    agg = model.aggregator
    with torch.no_grad():  # make special tokens matter (official init is ~1e-6)
        agg.camera_token.normal_()
        agg.register_token.normal_()
    imgs = images(20)
    p = 5 + 2 * 3  # tokens per frame of a 28x42 image
    with torch.inference_mode():
        frame_by_frame = stream(agg, imgs, 1, 4)
        calls = []

        def spy(q, k, v, attn_mask=None):
            calls.append((q.shape[2], k.shape[2], attn_mask is None))
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

        monkeypatch.setattr(cache_module, "F", SimpleNamespace(scaled_dot_product_attention=spy))
        cache = agg.new_cache(4)
        chunked = stream(agg, imgs, 8, 4, cache)
        # mixed sizes: single frames leave the ring out of frame order, so a later chunk re-orders it
        mixed = stream(agg, imgs, [1, 1, 1, 1, 1, 1, 3, 8, 1, 2], 4)
    assert max_err(frame_by_frame, chunked) <= 1e-5
    assert max_err(frame_by_frame, mixed) <= 1e-5
    # no mask and no masked-out work: every query frame attends to at most itself + 4 past frames
    bad = [c for c in calls if not (c[2] and c[1] <= 5 * p and c[0] == p)]
    assert calls and not bad, f"(query tokens, key tokens, no mask) of calls with a mask or masked-out keys: {bad}"
    assert len(cache.layers[0].frames) == 4 + 8  # bounded ring: window + chunk slots
    assert [f for f in cache.layers[0].frames if f >= 0] == [16, 17, 18, 19]


def test_window_limits_attention_and_cache():
    agg = tiny_aggregator()
    imgs = images(6)
    changed = imgs.clone()
    changed[:, 0] = 1 - changed[:, 0]
    with torch.inference_mode():
        windowed, _ = agg(imgs, window=2)
        full, _ = agg(imgs)
        alone_a, _ = agg(imgs, window=0)
        alone_b, _ = agg(changed, window=0)
        cache = agg.new_cache(window=2)
        for t in range(6):
            agg(imgs[:, t:t + 1], cache=cache)
            assert len(cache) == min(t + 1, 2)
    # frames 0..2 see all their past either way; frame 3 no longer sees frame 0 with a window of 2
    assert (windowed[-1][:, :3] - full[-1][:, :3]).abs().max() <= 1e-6
    assert (windowed[-1][:, 3:] - full[-1][:, 3:]).abs().max() > 1e-4
    # window 0: every frame attends only to itself, so frame 0 cannot influence later frames at all
    assert (alone_a[-1][:, 1:] - alone_b[-1][:, 1:]).abs().max() == 0
    # steady state: a ring of window + 1 slots per block (bounded memory)
    assert len(cache.layers[0].frames) == 3
    assert cache.num_frames_seen == 6


def test_causality_and_special_tokens():
    agg = tiny_aggregator()
    imgs = images(4)
    changed = imgs.clone()
    changed[:, 2] = 0.5
    with torch.inference_mode():
        a, _ = agg(imgs)
        b, _ = agg(changed)
        # the same image as frame 0 and as a later frame gets different tokens (camera token 0 vs 1)
        same = imgs[:, :1].expand(1, 2, -1, -1, -1)
        c, _ = agg(same)
    assert (a[-1][:, :2] - b[-1][:, :2]).abs().max() == 0
    assert (a[-1][:, 2:] - b[-1][:, 2:]).abs().max() > 1e-4
    assert (c[0][:, 0, 0, :64] - c[0][:, 1, 0, :64]).abs().max() > 1e-3
    ids = [0, 1, 5]
    special = agg.special_tokens(ids, 2)
    assert special.shape == (6, 5, 64)
    assert torch.equal(special[0, 0], agg.camera_token[0, 0, 0])
    assert torch.equal(special[1, 0], agg.camera_token[0, 1, 0]) and torch.equal(special[2, 1:], agg.register_token[0, 1])


def test_batch_of_two_streams():
    agg = tiny_aggregator()
    imgs = images(3, b=2)
    with torch.inference_mode():
        batched, _ = agg(imgs)
        streamed = stream(agg, imgs, 1, None)
        single, _ = agg(imgs[1:])
    assert max_err(batched, streamed) <= 1e-5
    assert (batched[-1][1:] - single[-1]).abs().max() <= 1e-5


def test_ring_buffer_grows_and_evicts():
    ring = KVRing()
    k = torch.randn(1, 2, 3 * 4, 8)
    for t in range(3):
        ring.attend(k[:, :, t * 4:(t + 1) * 4], k[:, :, t * 4:(t + 1) * 4], k[:, :, t * 4:(t + 1) * 4], [t], window=1)
    assert [f for f in ring.frames if f >= 0] == [2] and len(ring.frames) == 2  # window 1: 1 past + current
    with pytest.raises(ValueError, match="same size"):
        ring.attend(k[:, :, :6], k[:, :, :6], k[:, :, :6], [3], window=1)


@pytest.mark.parametrize("p", [3, 9])  # 3: one masked call; 9 (>= SLICE_MIN_TOKENS): per-frame key slices
def test_frame_causal_attention_matches_dense_mask(p):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4 * p, 8) for _ in range(3))
    frames = torch.arange(4)
    dense = (frames[None, :] <= frames[:, None]) & (frames[None, :] >= frames[:, None] - 1)
    mask = dense.repeat_interleave(p, 0).repeat_interleave(p, 1)
    expect = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = frame_causal_attention(q, k, v, frames, frames, p, window=1)
    assert (got - expect).abs().max() <= 1e-6
    # keys out of frame order (a ring) are not contiguous per query frame: the masked path, same result
    perm = torch.tensor([2, 0, 3, 1])
    idx = (perm[:, None] * p + torch.arange(p)).reshape(-1)
    got = frame_causal_attention(q, k[:, :, idx], v[:, :, idx], frames, perm, p, window=1)
    assert (got - expect).abs().max() <= 1e-6


def test_rope_layout():
    pos = patch_positions(2, 3, 5)
    assert pos.shape == (11, 2) and pos[:5].abs().sum() == 0
    assert pos[5].tolist() == [1, 1] and pos[7].tolist() == [1, 3] and pos[8].tolist() == [2, 1]
    rope = RoPE2D(pos, head_dim=8, base=100.0)
    x = torch.randn(1, 1, 11, 8)
    y = rope.apply(x)
    assert torch.allclose(y[..., :5, :], x[..., :5, :])  # position 0: identity
    # token 8 at (y=2, x=1): first half rotated by angle 2*freq, second by 1*freq; pair (i, i+2) within each half
    inv = 1.0 / (100.0 ** (torch.arange(0, 4, 2).float() / 4))
    ay, ax = 2 * inv[0], 1 * inv[0]
    x8 = x[0, 0, 8]
    assert torch.allclose(y[0, 0, 8, 0], x8[0] * torch.cos(ay) - x8[2] * torch.sin(ay), atol=1e-6)
    assert torch.allclose(y[0, 0, 8, 4], x8[4] * torch.cos(ax) - x8[6] * torch.sin(ax), atol=1e-6)
    # norms are preserved and frames laid out one after another reuse the same positions
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)
    two = rope.apply(torch.cat([x, x], dim=2))
    assert torch.allclose(two[..., 11:, :], y)


def test_dinov2_patch_embed_small():
    torch.manual_seed(0)
    dino = DinoV2(img_size=56, patch_size=14, embed_dim=32, depth=1, num_heads=2, num_register_tokens=4).eval()
    with torch.no_grad():
        dino.pos_embed.normal_()
    x = torch.randn(2, 3, 56, 56)
    assert dino(x).shape == (2, 16, 32)
    assert dino.interpolate_pos_encoding(16, 56, 56, torch.float32) is dino.pos_embed  # training size: as is
    pe = dino.interpolate_pos_encoding(8, 28, 56, torch.float32)
    assert pe.shape == (1, 9, 32)
    expect = torch.nn.functional.interpolate(dino.pos_embed[:, 1:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2),
                                             size=(2, 4), mode="bicubic", antialias=True)
    assert torch.allclose(pe[0, 1:], expect.permute(0, 2, 3, 1).reshape(8, 32)[None][0])
    assert dino(torch.randn(1, 3, 28, 56)).shape == (1, 8, 32)
    keys = set(dino.state_dict())
    assert {"cls_token", "pos_embed", "register_tokens", "mask_token", "patch_embed.proj.weight", "norm.weight",
            "blocks.0.ls1.gamma", "blocks.0.attn.qkv.bias"} <= keys
    assert not any("q_norm" in k for k in keys)
