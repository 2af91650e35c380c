"""Our DINOv2-with-registers patch embedding against timm's independent implementation (same weights):
checks block structure, eps 1e-6, LayerScale, register placement and the antialiased bicubic pos-embed resize
to a non-square grid (row/column order)."""

from __future__ import annotations

import pytest
import torch

from model.streamvggt.dinov2 import DinoV2

timm = pytest.importorskip("timm")


def test_dinov2_matches_timm():
    torch.manual_seed(0)
    ours = DinoV2(img_size=56, patch_size=14, embed_dim=32, depth=2, num_heads=2, num_register_tokens=4).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.2)
    ref = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=56, embed_dim=32, depth=2,
                            num_heads=2, dynamic_img_size=True).eval()
    sd = {k: v for k, v in ours.state_dict().items() if k not in ("cls_token", "pos_embed", "register_tokens",
                                                                  "mask_token")}
    sd["cls_token"] = ours.cls_token + ours.pos_embed[:, :1]  # timm folds the cls position into the token
    sd["pos_embed"] = ours.pos_embed[:, 1:]
    sd["reg_token"] = ours.register_tokens
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    assert not missing and not unexpected
    with torch.inference_mode():
        for h, w in ((56, 56), (28, 42), (42, 28)):
            x = torch.randn(2, 3, h, w)
            expect = ref.forward_features(x)[:, 5:]
            got = ours(x)
            assert got.shape == (2, (h // 14) * (w // 14), 32)
            assert (got - expect).abs().max() <= 1e-5, (h, w)
