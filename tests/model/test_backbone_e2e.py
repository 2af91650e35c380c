"""End to end on the official tiny reference: images -> our aggregator -> camera head and the DPT heads,
through ``StreamVGGT.forward`` (batched) and ``StreamVGGT.stream`` (frame by frame and in chunks)."""

from __future__ import annotations

import pytest
import torch

from model.streamvggt.streamvggt import StreamVGGT  # noqa: E402
from tests.model.reference import load_module_weights  # noqa: E402


@pytest.fixture(scope="module")
def model_and_ref(tiny_reference):
    model = StreamVGGT.tiny()
    for name in ("aggregator", "camera_head", "depth_head", "point_head"):
        load_module_weights(getattr(model, name), tiny_reference, name)
    return model, tiny_reference


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() <= tol


def test_batched_end_to_end(model_and_ref):
    model, ref = model_and_ref
    out = model(ref["inputs.images"])
    assert all(close(out["tokens"][i], ref[f"batched.tokens.{i}"]) for i in range(4))
    assert close(out["pose_enc"], ref["batched.pose_enc"])
    for key in ("depth", "depth_conf", "world_points", "world_points_conf"):
        assert close(out[key], ref[f"batched.{key}"]), key
    assert out["patch_start_idx"] == 5 and len(out["pose_enc_list"]) == 4


@pytest.mark.parametrize("chunk", [1, 3])
def test_streaming_end_to_end(model_and_ref, chunk):
    model, ref = model_and_ref
    imgs = ref["inputs.images"]
    state = model.new_state()
    parts = []
    for i in range(0, imgs.shape[1], chunk):
        frames = imgs[:, i] if chunk == 1 else imgs[:, i:i + chunk]
        parts.append(model.stream(frames, state))
    assert state.num_frames_seen == 4
    tokens = [torch.cat([p["tokens"][i] for p in parts], dim=1) for i in range(4)]
    assert all(close(tokens[i], ref[f"streaming.tokens.{i}"]) for i in range(4))
    assert close(torch.cat([p["pose_enc"] for p in parts], dim=1), ref["streaming.pose_enc"])
    depth = torch.cat([p["depth"] for p in parts], dim=1)
    assert close(depth, ref["batched.depth"])  # streaming tokens == batched tokens, so depth matches too


def test_bf16_model_streams_close_to_fp32():
    imgs = torch.rand(1, 4, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    ref = StreamVGGT.tiny()(imgs)
    model = StreamVGGT.tiny().to(torch.bfloat16)
    state = model.new_state(window=2)
    outs = [model.stream(imgs[:, i].bfloat16(), state) for i in range(4)]
    assert state.aggregator.layers[0].k.dtype == torch.bfloat16 and len(state.aggregator) == 2
    tokens = torch.cat([o["tokens"][-1] for o in outs], dim=1).float()
    assert (tokens[:, :3] - ref["tokens"][-1][:, :3]).abs().max() < 0.05 * ref["tokens"][-1].abs().max()
    depth = torch.cat([o["depth"] for o in outs], dim=1).float()
    assert depth.shape == ref["depth"].shape and torch.isfinite(depth).all()


def test_forward_with_query_points_runs_track_head():
    model = StreamVGGT.tiny()
    imgs = torch.rand(1, 3, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    out = model(imgs, query_points=torch.tensor([[[10.0, 12.0], [20.0, 5.0]]]), heads=("camera",))
    assert len(out["track"]) == 4 and out["track"][-1].shape == (1, 3, 2, 2)
    assert out["vis"].shape == (1, 3, 2) and out["conf"].shape == (1, 3, 2)
    assert "depth" not in out and out["pose_enc"].shape == (1, 3, 9)
    with pytest.raises(ValueError, match="unknown heads"):
        model(imgs, heads=("normals",))
