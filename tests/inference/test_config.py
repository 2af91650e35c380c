"""InferConfig is the one source of inference.run's flags, and the Python API's keyword options are read the way
the command line reads the same flags."""

from __future__ import annotations

import dataclasses

import pytest


def _flag_fields():
    from inference.config import InferConfig
    from utils.cli import CLI_KEY

    return [f.name for f in dataclasses.fields(InferConfig) if CLI_KEY in f.metadata]


def test_every_flag_is_a_config_field_and_back():
    from inference.run import build_parser

    dests = [a.dest for a in build_parser()._actions if a.dest != "help"]
    assert sorted(dests) == sorted(_flag_fields())
    assert len(dests) == len(set(dests))  # one flag per field, none declared twice


def test_parse_config_gives_the_filled_config_with_old_spellings():
    from inference.config import InferConfig, apply_preset
    from inference.run import parse_config

    cfg = parse_config(["--source", "a", "b", "--out", "o", "--decoder", "d", "--chunk", "3", "--fps", "12"])
    assert isinstance(cfg, InferConfig)
    assert (cfg.source, cfg.chunk_size, cfg.fps, cfg.window, cfg.compute_dtype) == (["a", "b"], 3, 12.0, None, None)
    apply_preset(cfg)
    assert (cfg.chunk_size, cfg.window, cfg.compute_dtype, cfg.window_given) == (3, 128, "fp32", False)
    pub = parse_config(["--source", "a", "--out", "o", "--decoder", "d", "--preset", "published"])
    apply_preset(pub)
    assert (pub.chunk_size, pub.window, pub.mode, pub.no_tokens) == (1, 120, "original", True)


def _system(**specs):
    from langvggt4d.api import LangVGGT4D

    system = LangVGGT4D.__new__(LangVGGT4D)  # options() reads only the specs; no networks are loaded
    system.specs = {"decoder": "d", "backbone": "tiny:0", "preset": "default", "autoencoder": None,
                    "video_autoencoder": None, "device": "cpu", "dtype": "fp32", **specs}
    return system


@pytest.mark.parametrize("options, flags", [
    ({}, []),
    ({"chunk_size": 4, "no_geometry": True, "no_pca": False, "window": None}, ["--chunk-size", "4", "--no-geometry"]),
    ({"chunk_size": "4", "fps": 12, "min_conf": "0.5", "mode": "crop", "target_width": 280, "overwrite": True},
     ["--chunk-size", "4", "--fps", "12", "--min-conf", "0.5", "--mode", "crop", "--target-width", "280",
      "--overwrite"]),
])
def test_predict_options_equal_the_command_lines_config(options, flags):
    from inference.config import apply_preset
    from inference.run import parse_config

    got = _system().options("src", "out", **options)
    want = parse_config(["--source", "src", "--decoder", "d", "--out", "out", "--device", "cpu",
                         "--compute-dtype", "fp32", "--backbone", "tiny:0", *flags])
    apply_preset(want)
    assert got == want and got.window_given == want.window_given
    assert {k: type(v) for k, v in vars(got).items()} == {k: type(v) for k, v in vars(want).items()}


def test_unknown_or_misplaced_options_name_themselves_and_the_valid_ones():
    from utils.cli import OptionError, OptionValueError, UserError

    system = _system()
    with pytest.raises(TypeError, match="'chunks'") as e:
        system.options("src", "out", chunks=4)
    assert isinstance(e.value, OptionError) and isinstance(e.value, UserError)
    valid = e.value.fix
    assert "chunk_size" in valid and "no_geometry" in valid and "fused_max_points" in valid
    assert "device" not in valid.split(", ") and "source" not in valid  # set elsewhere, not predict() options
    with pytest.raises(OptionError, match=r"'device'.*from_pretrained\(device=\.\.\.\)"):
        system.options("src", "out", device="cuda")
    with pytest.raises(OptionValueError, match="chunk_size='x'"):
        system.options("src", "out", chunk_size="x")
    with pytest.raises(OptionValueError, match="not one of"):
        system.options("src", "out", mode="bogus")
    with pytest.raises(OptionValueError, match="is a switch"):
        system.options("src", "out", no_pca=1)
    with pytest.raises(OptionValueError, match="takes a value"):
        system.options("src", "out", window=True)
