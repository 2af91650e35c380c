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


#: flags whose meaning is shared across commands: declared once, in utils/cli.py (one name per flag, issue 23)
SHARED_FLAGS = ("--device", "--chunk-size", "--chunk", "--compute-dtype", "--hash-text", "--text-encoder")


def test_each_shared_flag_is_declared_once():
    """No command declares a shared flag itself: each comes from its ``utils.cli.add_*_arg(s)`` helper, so its
    spelling and meaning are the same everywhere (benchmarks/ keep their own measurement knobs)."""
    import ast

    from tests.conftest import REPO_ROOT

    declared: dict[str, set[str]] = {f: set() for f in SHARED_FLAGS}
    files = [REPO_ROOT / "train.py"]
    for d in ("utils", "model", "preprocess", "training", "inference", "eval", "viewer", "langvggt4d", "scripts"):
        files += sorted((REPO_ROOT / d).rglob("*.py"))
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and arg.value in declared:
                        declared[arg.value].add(str(f.relative_to(REPO_ROOT)))
    elsewhere = {flag: sorted(where - {"utils/cli.py"}) for flag, where in declared.items() if where - {"utils/cli.py"}}
    assert not elsewhere, elsewhere
    assert declared["--device"] == {"utils/cli.py"}  # ... and the helper itself is where it is declared
    users = [m for m in ENTRY_POINTS if "--device" in {s for a in importlib.import_module(m).build_parser()._actions
                                                       for s in a.option_strings}]
    assert len(users) >= 10  # the flag is still there in every command that had it


def test_old_spellings_still_work_with_one_line_each(capsys):
    from inference.run import build_parser as run_parser
    from preprocess.extract_semantics import build_parser as semantics_parser

    base = ["--source", "s", "--decoder", "d", "--out", "o"]
    new = run_parser().parse_args([*base, "--chunk-size", "3", "--compute-dtype", "bf16"])
    assert capsys.readouterr().err == ""
    old = run_parser().parse_args([*base, "--chunk", "3", "--dtype", "bf16"])
    assert (old.chunk_size, old.compute_dtype) == (new.chunk_size, new.compute_dtype) == (3, "bf16")
    assert capsys.readouterr().err.splitlines() == [
        "WARNING --chunk is an old spelling: use --chunk-size (same meaning)",
        "WARNING --dtype is an old spelling: use --compute-dtype (same meaning)"]
    sem = ["--scene", "s", "--mode", "oracle"]
    assert semantics_parser().parse_args([*sem, "--hash-text"]).hash_text is True
    assert semantics_parser().parse_args(sem).hash_text is False
    assert capsys.readouterr().err == ""
    assert semantics_parser().parse_args([*sem, "--text-encoder", "hash"]).hash_text is True
    assert semantics_parser().parse_args([*sem, "--text-encoder", "clip"]).hash_text is False
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(ln.startswith("WARNING --text-encoder is an old spelling: use --hash-text")
                                   for ln in lines)


def test_benchmarks_take_the_chunk_size_flag_from_utils_cli():
    """The benchmarks that run the backbone in chunks take ``--chunk-size`` from ``utils.cli.add_chunk_size_arg``
    (their old ``--chunk`` still works), never a spelling of their own."""
    import ast

    from tests.conftest import REPO_ROOT

    own = []
    for f in sorted((REPO_ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                names = {a.value for a in node.args if isinstance(a, ast.Constant)}
                if any(str(n).startswith("--chunk") for n in names):
                    own.append(f"{f.name}: {sorted(names)}")
    assert not own, own
    for name in ("bench_backbone", "bench_inference", "bench_token_cache"):
        tree = ast.parse((REPO_ROOT / "benchmarks" / f"{name}.py").read_text())
        assert any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "add_chunk_size_arg"
                   for n in ast.walk(tree)), name
