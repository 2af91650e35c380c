"""The real predictor on the tiny backbone: chunked streaming equals frame-by-frame streaming."""

from __future__ import annotations

import numpy as np
import torch

import model.decoder as dec
import model.streamvggt.streamvggt as sv
from inference.geometry import is_rotation
from inference.pipeline import Frame
from preprocess.crop import CropInfo


def _frames(n, h=28, w=42):
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        img = torch.rand(3, h, w, generator=g)
        yield Frame(f"{i + 1:06d}", i, (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8), img,
                    CropInfo.identity((h, w)))


def _predict(chunk, n=5, window=3):
    from inference.pipeline import chunked
    from inference.predictor import LangVGGTPredictor

    torch.manual_seed(0)
    backbone = sv.StreamVGGT.tiny(seed=0)
    cfg = backbone.config
    decoder = dec.SemanticBridgingDecoder(dec.DecoderConfig.tiny(dim_in=cfg.token_dim, layers=tuple(cfg.dpt_layers)))
    pred = LangVGGTPredictor(decoder, backbone, None, window=window, geometry=True)
    outs = [pred(c, [True] * len(c)) for c in chunked(_frames(n), chunk)]
    cat = {k: torch.cat([o.fields[k] for o in outs]) for k in outs[0].fields}
    return cat, torch.cat([o.depth for o in outs]), torch.cat([o.extrinsics for o in outs])


def test_chunked_equals_frame_by_frame():
    f1, d1, e1 = _predict(chunk=1)
    f3, d3, e3 = _predict(chunk=3)
    assert f1["small"].shape == (5, 3, 28, 42) and d1.shape == (5, 28, 42) and e1.shape == (5, 3, 4)
    for k in f1:
        torch.testing.assert_close(f3[k], f1[k], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(d3, d1, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(e3, e1, atol=1e-4, rtol=1e-4)
    assert all(is_rotation(e[:, :3].double().numpy(), atol=1e-4) for e in e1)
