import pytest
import torch

from model.decoder import LEVELS, DecoderConfig, SemanticBridgingDecoder
from model.unet import UNetDecoder, UNetEncoder


def _tokens(b, grid, dim=32, psi=5):
    return [torch.randn(b, psi + grid[0] * grid[1], dim) for _ in range(4)]


def test_unet_odd_sizes_round_trip():
    enc, dec = UNetEncoder(6, (4, 8, 8, 16)), UNetDecoder(3, (4, 8, 8, 16))
    x = torch.randn(2, 6, 29, 43)
    feats = enc(x)
    assert [f.shape[-2:] for f in feats] == [(29, 43), (15, 22), (8, 11), (4, 6)]
    assert dec(feats).shape == (2, 3, 29, 43)


def test_decoder_outputs_and_gradients():
    torch.manual_seed(0)
    model = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=32, video_dim=6))
    frame = torch.rand(2, 3, 28, 42)
    out = model(_tokens(2, (2, 3)), frame, patch_start_idx=5)
    assert set(out["lang"]) == set(LEVELS)
    for lvl in LEVELS:
        assert out["lang"][lvl].shape == (2, 3, 28, 42)
    assert out["rgb"].shape == (2, 3, 28, 42) and 0 < out["rgb"].min() and out["rgb"].max() < 1
    assert out["video"].shape == (2, 6, 28, 42)
    loss = sum(v.square().mean() for v in out["lang"].values()) + out["rgb"].mean() + out["video"].mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    # the language decoders are separate: different outputs
    assert not torch.allclose(out["lang"]["small"], out["lang"]["large"])


def test_decoder_resizes_to_frame_and_accepts_frame_axis():
    model = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=32, rgb=False))
    toks = [t.unsqueeze(1) for t in _tokens(1, (2, 2))]  # (B, S=1, P, 2C)
    out = model(toks, torch.rand(1, 3, 30, 31), patch_start_idx=5)  # not a multiple of 14
    assert out["lang"]["middle"].shape == (1, 3, 30, 31) and "rgb" not in out and "video" not in out


def test_config_round_trip_and_errors():
    cfg = DecoderConfig.tiny(video_dim=6, lang_dim=5)
    assert DecoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown decoder config"):
        DecoderConfig.from_dict({"bogus": 1})
    model = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=32))
    with pytest.raises(ValueError, match="token layers"):
        model(_tokens(1, (2, 2))[:3], torch.rand(1, 3, 28, 28))


def test_published_widths():
    cfg = DecoderConfig()
    assert (cfg.dim_in, cfg.dpt_features, cfg.lang_widths, cfg.lang_dim) == (2048, 128, (32, 64, 128, 256), 3)
    model = SemanticBridgingDecoder(cfg)
    assert model.feature_extractor.scratch.output_conv1.out_channels == 128
    assert model.lang_decoders["small"].out.out_channels == 3


def test_init_dpt_from_backbone_depth_head(tmp_path):
    from model.decoder import init_feature_extractor_from_backbone
    from model.streamvggt.streamvggt import StreamVGGT
    from utils.io import save_safetensors_atomic

    bb = StreamVGGT.tiny(seed=0)
    save_safetensors_atomic(bb.state_dict(), tmp_path / "bb.safetensors")
    cfg = DecoderConfig.tiny(dim_in=128, dpt_out_channels=(16, 32, 64, 64), dpt_features=32)
    dec = SemanticBridgingDecoder(cfg)
    copied = init_feature_extractor_from_backbone(dec, tmp_path / "bb.safetensors")
    assert "projects.0.weight" in copied and "norm.weight" in copied
    assert "scratch.output_conv1.weight" not in copied  # 32->32 (feature only) vs 32->16 in the depth head
    for k in copied:
        assert torch.equal(dec.feature_extractor.state_dict()[k], bb.depth_head.state_dict()[k])
    with pytest.raises(ValueError, match="no depth_head"):
        init_feature_extractor_from_backbone(SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=32)),
                                             tmp_path / "bb.safetensors")


def test_frame_input_option_feeds_the_language_branch_only():
    torch.manual_seed(0)
    toks = _tokens(1, (2, 2))
    f1, f2 = torch.rand(1, 3, 28, 28), torch.rand(1, 3, 28, 28)
    with_frame = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=32, video_dim=6)).eval()
    assert with_frame.config.frame_input  # default on
    a, b = with_frame(toks, f1), with_frame(toks, f2)
    for lvl in LEVELS:
        assert not torch.allclose(a["lang"][lvl], b["lang"][lvl])
    assert not torch.allclose(a["video"], b["video"])
    assert torch.allclose(a["rgb"], b["rgb"])  # the RGB branch must not copy the frame
    published = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=32, frame_input=False)).eval()
    a, b = published(toks, f1), published(toks, f2)
    for lvl in LEVELS:
        assert torch.allclose(a["lang"][lvl], b["lang"][lvl])
    # a config written before the option (no frame_input key) is the published architecture
    d = DecoderConfig.tiny(dim_in=32).to_dict()
    d.pop("frame_input")
    old = DecoderConfig.from_dict(d)
    assert not old.frame_input
    SemanticBridgingDecoder(old).load_state_dict(published.state_dict())
    assert DecoderConfig.from_dict(DecoderConfig.tiny(dim_in=32).to_dict()).frame_input
