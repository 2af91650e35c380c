"""Camera head: official tiny reference (batched and streaming with its cache quirk), chunked streaming,
cache growth (num_iterations entries per frame), windowed cache, key names."""

from __future__ import annotations

import pytest
import torch

from model.streamvggt.heads.camera_head import CameraHead, activate_pose
from tests.model.reference import load_module_weights


def test_reference_pose_batched_and_streaming(tiny_reference):
    ref = tiny_reference
    head = load_module_weights(CameraHead(dim_in=128, trunk_depth=2, num_heads=4).eval(), ref, "camera_head")
    tokens = [ref[f"batched.tokens.{i}"] for i in range(4)]
    with torch.inference_mode():
        batched = head(tokens)
        cache = head.new_cache()
        per_frame = [head([t[:, s:s + 1] for t in tokens], cache=cache)[-1] for s in range(4)]
        chunk_cache = head.new_cache()
        chunked = head(tokens, cache=chunk_cache)[-1]
    assert len(batched) == 4 and batched[-1].shape == (1, 4, 9)
    assert (batched[-1] - ref["batched.pose_enc"]).abs().max() <= 1e-4
    streamed = torch.cat(per_frame, dim=1)
    assert (streamed - ref["streaming.pose_enc"]).abs().max() <= 1e-4
    assert (chunked - streamed).abs().max() <= 1e-6
    # the quirk: 4 cache entries per frame and trunk block
    assert len(cache.layers[0].frames) >= 16 and cache.layers[0].num_frames == 16 and len(cache) == 4


def test_streaming_quirk_differs_from_batched_and_window():
    torch.manual_seed(0)
    head = CameraHead(dim_in=32, trunk_depth=2, num_heads=2, init_values=1.0).eval()
    tokens = [torch.randn(1, 5, 3, 32)]
    with torch.inference_mode():
        batched = head(tokens)[-1]
        streamed = head(tokens, cache=head.new_cache())[-1]
        cache = head.new_cache(window=1)
        windowed = head(tokens, cache=cache)[-1]
        first_two = head([tokens[0][:, :2]])[-1]
    assert (batched[:, 0] - streamed[:, 0]).abs().max() > 1e-5  # stale entries of earlier iterations matter
    assert (batched - streamed).abs().max() > 1e-5
    assert (first_two - batched[:, :2]).abs().max() <= 1e-6  # batched mode is causal
    assert len(cache) <= 2 and cache.layers[0].num_frames <= 8
    assert (windowed[:, :2] - streamed[:, :2]).abs().max() <= 1e-6
    assert (windowed[:, 2:] - streamed[:, 2:]).abs().max() > 1e-6
    with pytest.raises(ValueError, match="iterations"):
        head(tokens, num_iterations=3, cache=head.new_cache())


def test_activation_and_keys():
    enc = torch.tensor([[1.0, -2.0, 3.0, 0.1, -0.2, 0.3, -0.9, -0.5, 0.7]])
    out = activate_pose(enc)
    assert torch.equal(out[:, :7], enc[:, :7]) and out[0, 7] == 0 and out[0, 8] == 0.7
    keys = set(CameraHead(dim_in=16, trunk_depth=1, num_heads=2).state_dict())
    assert {"poseLN_modulation.1.weight", "pose_branch.fc2.bias", "empty_pose_tokens", "trunk.0.ls1.gamma",
            "token_norm.weight", "trunk_norm.bias", "embed_pose.weight"} <= keys
    assert not any("adaln_norm" in k or "q_norm" in k for k in keys)
