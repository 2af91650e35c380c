"""The CLIs answer --help with a description of every flag, and infer.sh documents its defaults."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("module", ["inference.run", "eval.query"])
def test_help(module, capsys):
    mod = __import__(module, fromlist=["build_parser"])
    parser = mod.build_parser()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, f"{module}: flag {action.option_strings} has no help text"
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--help"])
    assert e.value.code == 0
    assert "--fields" in capsys.readouterr().out or module == "inference.run"


def test_infer_sh_help():
    out = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "infer.sh"), "--help"], capture_output=True,
                         text=True, check=True, timeout=30).stdout
    for name in ("DECODER", "BACKBONE", "DEVICE", "CHUNK", "WINDOW", "QUERIES"):
        assert name in out

