"""model.text.check_text_encoder: queries must be embedded by the encoder the targets were made with."""

from __future__ import annotations

import logging

import pytest

from model.text import TextEncoderMismatch, check_text_encoder, flags_for, text_encoder_from_options
from utils.cli import UserError


def test_flags_rebuild_the_recorded_encoder():
    import argparse

    from utils.cli import add_text_encoder_args

    for identity in ("hash-bow(dim=512,seed=0)", "hash-bow(dim=512,seed=3)", "tiny-random(seed=2)"):
        p = argparse.ArgumentParser()
        add_text_encoder_args(p)
        assert text_encoder_from_options(p.parse_args(flags_for(identity).split())).identity == identity
    assert flags_for("ViT-B-16:laion2b_s34b_b88k") == "--clip-model ViT-B-16 --clip-pretrained laion2b_s34b_b88k"
    assert "--clip-weights" in flags_for("ViT-B-16:open_clip_pytorch_model.bin")


def test_refused_warned_or_accepted(caplog):
    check_text_encoder(None, "hash-bow(dim=512,seed=0)", "ae/config.json")  # nothing recorded: not checked
    check_text_encoder("ViT-B-16:x", "ViT-B-16:x", "ae/config.json")
    with pytest.raises(TextEncoderMismatch) as e:
        check_text_encoder("hash-bow(dim=512,seed=0)", "ViT-B-16:laion2b_s34b_b88k", "ae/config.json")
    assert isinstance(e.value, UserError)
    assert "ae/config.json" in str(e.value) and "--hash-text" in str(e.value)
    for recorded, used in (("ViT-B-16:laion2b_s34b_b88k", "ViT-L-14:openai"), ("tiny-random(seed=0)",
                                                                            "tiny-random(seed=1)"),
                           ("hash-bow(dim=512,seed=0)", "hash-bow(dim=512,seed=1)")):
        with pytest.raises(TextEncoderMismatch):
            check_text_encoder(recorded, used, "ae/config.json")
    # same architecture, weights named differently (a tag vs a local file of it): warned, not refused
    with caplog.at_level(logging.WARNING, logger="model.text"):
        check_text_encoder("ViT-B-16:laion2b_s34b_b88k", "ViT-B-16:ViT-B-16_laion2b.bin", "ae/config.json")
    assert "same weights" in caplog.text
