"""model/ builds and loads every network through one small factory."""

from __future__ import annotations

import torch

import model
from model.autoencoder import FeatureAutoencoder
from model.decoder import DecoderConfig, SemanticBridgingDecoder
from model.published_decoder import PublishedDecoderConfig, PublishedLanguageHead


def test_factory_builds_and_loads_every_network(tmp_path):
    bb, bid, info = model.load_backbone("tiny:3")
    assert bid == "tiny-random-seed3" and info["kind"] == "tiny-random" and not bb.training
    assert isinstance(model.build_decoder(DecoderConfig.tiny(dim_in=32)), SemanticBridgingDecoder)
    head = model.build_decoder(PublishedDecoderConfig.tiny(dim_in=32).to_dict())
    assert isinstance(head, PublishedLanguageHead)
    from model.decoder_io import save_decoder_file

    save_decoder_file(head, tmp_path / "head.safetensors")
    again = model.load_decoder(tmp_path / "head.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), head.state_dict().values(), strict=True))
    FeatureAutoencoder(in_dim=16, encoder_dims=[8, 3], decoder_dims=[8, 16]).save(tmp_path / "ae")
    assert model.load_autoencoder(tmp_path / "ae").latent_dim == 3
    enc = model.build_text_encoder("hash", dim=16)
    assert enc.encode_text(["red ball"]).shape == (1, 16)
    assert sorted(model.__all__) == ["build_decoder", "build_text_encoder", "load_autoencoder", "load_backbone",
                                     "load_decoder"]
