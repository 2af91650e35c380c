"""The default (full-size) model built on the meta device has exactly the official 1,797 keys and shapes."""

from __future__ import annotations

import torch

from model.streamvggt.config import StreamVGGTConfig
from tests.model.reference import checkpoint_shapes


def test_default_model_keys_and_shapes_match_official(fixtures_dir):
    from model.streamvggt.streamvggt import StreamVGGT

    expected = checkpoint_shapes(fixtures_dir)
    with torch.device("meta"):
        model = StreamVGGT(StreamVGGTConfig())
    state = model.state_dict()
    assert all(t.is_meta for t in state.values())  # nothing allocated
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    wrong = [k for k in expected if tuple(state[k].shape) != expected[k]]
    assert not wrong, wrong[:5]
    assert len(state) == 1797
    assert sum(t.numel() for t in state.values()) == 1_256_537_516


def test_aggregator_keys_with_conv_patch_embed():
    from model.streamvggt.aggregator import Aggregator

    keys = set(Aggregator.from_config(StreamVGGTConfig.tiny()).state_dict())
    assert {"camera_token", "register_token", "patch_embed.proj.weight", "frame_blocks.3.attn.q_norm.weight",
            "global_blocks.0.attn.k_norm.bias", "global_blocks.3.ls2.gamma"} <= keys
    assert not any("resnet" in k for k in keys)


def test_full_size_aggregator_shapes_on_meta_device():
    """DINOv2 path (pos-embed resize 37x37 -> 21x37), 24 block pairs, streaming with a window: shapes only."""
    from model.streamvggt.aggregator import Aggregator

    with torch.device("meta"):
        agg = Aggregator.from_config(StreamVGGTConfig()).eval()
        imgs = torch.rand(1, 1, 3, 294, 518)
    with torch.inference_mode():  # meta ops run through Python references: keep it to one frame
        cache = agg.new_cache(window=128)
        streamed, psi = agg(imgs, cache=cache)
    assert psi == 5 and len(streamed) == 24
    assert streamed[-1].shape == (1, 1, 5 + 21 * 37, 2048)
    assert len(cache) == 1 and cache.num_frames_seen == 1
