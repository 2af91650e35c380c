"""Every entry point answers --help with a description of every flag, including the shared verbosity flags."""

from __future__ import annotations

import importlib

import pytest

ENTRY_POINTS = ["preprocess.make_synthetic", "preprocess.extract_tokens", "preprocess.extract_semantics",
                "preprocess.train_autoencoder", "training.trainer", "inference.run", "eval.query.run",
                "eval.protocol.runner", "eval.geometry.runner", "viewer.app", "eval.tracks.run", "inference.track",
                "inference.motion", "eval.tracks.scene", "inference.ground_truth"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_help_describes_every_flag(module, capsys):
    parser = importlib.import_module(module).build_parser()
    undocumented = [a.option_strings for a in parser._actions if a.dest != "help" and not a.help]
    assert not undocumented, f"{module}: flags without help: {undocumented}"
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--debug", "-v"} <= flags, f"{module} lacks the shared verbosity flags"
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--help"])
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out
