"""The predictor with a windowed backbone (PAGE-4D, mask on): overlapping windows joined by Sim(3), a video within
one window is exactly one forward pass, and the dynamic mask is written as geometry/dynamic/<key>.safetensors."""

from __future__ import annotations

import numpy as np
import torch

import model.decoder as dec
from inference.geometry import is_rotation
from inference.pipeline import Frame, InferenceSettings, chunked, run_inference
from inference.predictor import LangVGGTPredictor
from model.backbones import load_backbone
from model.streamvggt.pose import pose_encoding_to_extri_intri
from preprocess.crop import CropInfo

H, W = 28, 42


def _frames(n):
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        img = torch.rand(3, H, W, generator=g)
        yield Frame(f"{i + 1:06d}", i, (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8), img,
                    CropInfo.identity((H, W)))


def _setup(window, overlap, geometry=True):
    backbone = load_backbone("page4d-mask:tiny:0")[0]
    cfg = backbone.config
    torch.manual_seed(0)
    decoder = dec.SemanticBridgingDecoder(dec.DecoderConfig.tiny(dim_in=cfg.token_dim, layers=cfg.dpt_layers))
    pred = LangVGGTPredictor(decoder, backbone, None, window=window, overlap=overlap, geometry=geometry)
    return backbone, decoder, pred


def test_one_window_is_one_forward_pass_exactly():
    backbone, decoder, pred = _setup(window=8, overlap=2)
    frames = list(_frames(5))
    out = pred(frames, [True] * 5)
    images = torch.stack([f.image for f in frames])
    ref = backbone(images[None], heads=("camera", "depth"))
    extr, intr = pose_encoding_to_extri_intri(ref["pose_enc"][0].float(), (H, W))
    assert torch.equal(out.extrinsics, extr) and torch.equal(out.intrinsics, intr)
    assert torch.equal(out.depth, ref["depth"][0, ..., 0]) and torch.equal(out.conf, ref["depth_conf"][0])
    toks = [ref["tokens"][i][0] for i in decoder.config.layers]
    with torch.no_grad():
        fields = decoder.predict(toks, images, patch_start_idx=5)["lang"]
    for k, v in fields.items():
        assert torch.equal(out.fields[k], v.float()), k
    # the dynamic mask: each patch's attn_value on its 14x14 pixels
    value = ref["attn_value"].reshape(5, -1)[:, 5:].reshape(5, H // 14, W // 14)
    assert out.dynamic.shape == (5, H, W)
    assert torch.equal(out.dynamic[:, :14, :14], value[:, :1, :1].expand(5, 14, 14))
    assert (out.dynamic.abs() < 0.5).all()


def test_windows_give_every_frame_a_camera_and_a_depth():
    _, _, pred = _setup(window=3, overlap=1)
    outs = [pred(c, [True] * len(c)) for c in chunked(_frames(7), 2)]
    extr = torch.cat([o.extrinsics for o in outs])
    assert extr.shape == (7, 3, 4) and torch.cat([o.depth for o in outs]).shape == (7, H, W)
    assert all(is_rotation(e[:, :3].double().numpy(), atol=1e-4) for e in extr)
    assert all(o.dynamic.shape == (len(o.depth), H, W) for o in outs)


def test_the_dynamic_mask_is_written_per_frame(tmp_path):
    from safetensors.torch import load_file

    from inference.outputs import OutputLayout

    _, _, pred = _setup(window=3, overlap=1)
    run_inference(_frames(4), 4, pred, tmp_path, InferenceSettings(chunk=2, pca=False, rgb=False),
                  keys=[f"{i + 1:06d}" for i in range(4)])
    layout = OutputLayout(tmp_path)
    for i in range(4):
        got = load_file(str(layout.dynamic(f"{i + 1:06d}")))
        assert got["dynamic"].shape == (H, W) and got["valid"].all()


def test_a_decoder_refuses_another_family_in_one_line_naming_both():
    import types

    import pytest

    from inference.run import check_backbones
    from utils.cli import UserError

    decoder = types.SimpleNamespace(source_info={"token_info": {"backbone": "tiny-random-seed0"}})
    _, bid, _ = load_backbone("page4d-mask:tiny:0")
    with pytest.raises(UserError) as e:
        check_backbones(decoder, None, bid, "decoder_dir")
    text = str(e.value)
    assert "\n" not in text and "tiny-random-seed0" in text and "page4d-mask-tiny-random-seed0" in text
    check_backbones(decoder, None, load_backbone("tiny:0")[1], "decoder_dir")  # the same backbone passes
