"""The one to_dict / from_dict of our dataclass configs (``model/config_dict.py``): a JSON round trip gives the
same config back (tuples included), and an unknown key is refused naming the config."""

from __future__ import annotations

import json

import pytest

from model.decoder import DecoderConfig
from model.published_decoder import PublishedDecoderConfig
from model.streamvggt.config import StreamVGGTConfig

CONFIGS = [DecoderConfig.tiny(video_dim=6), PublishedDecoderConfig.tiny(), StreamVGGTConfig.tiny()]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_json_round_trip_is_identity(config):
    d = config.to_dict()
    assert not any(isinstance(v, tuple) for v in d.values())  # JSON has no tuples: what comes back must be equal
    back = type(config).from_dict(json.loads(json.dumps(d)))
    assert back == config and type(back) is type(config)


@pytest.mark.parametrize("config, name", list(zip(CONFIGS, ["decoder config", "published-decoder config",
                                                             "StreamVGGTConfig"], strict=True)))
def test_unknown_keys_are_refused_by_name(config, name):
    with pytest.raises(ValueError, match=f"unknown {name} keys \\['wings'\\]"):
        type(config).from_dict({**config.to_dict(), "wings": 2})


def test_each_config_keeps_its_own_rules():
    d = DecoderConfig.tiny().to_dict()
    del d["frame_input"]  # configs written before the option: no frame input
    assert DecoderConfig.from_dict(d).frame_input is False
    with pytest.raises(ValueError, match="not a published-decoder config"):
        PublishedDecoderConfig.from_dict({**PublishedDecoderConfig.tiny().to_dict(), "video_dim": 6})
