"""``python -m inference.run --geometry-only``: the backbone's depth and cameras without a decoder, exactly what a
full run with a decoder writes for them, no fields; and one ``error:`` line for the flags it cannot go with."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import model.decoder as dec
from inference.outputs import OutputLayout, read_depth
from model.decoder_io import save_decoder_file
from utils.cli import UserExit

KEYS = [f"{i + 1:06d}" for i in range(5)]


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("geo")
    rng = np.random.default_rng(0)
    (root / "frames").mkdir()
    for k in KEYS:
        assert cv2.imwrite(str(root / "frames" / f"{k}.png"), rng.integers(0, 255, (28, 42, 3), dtype=np.uint8))
    return root


def _run(*argv):
    from inference.run import main

    return main([*argv, "--target-width", "42", "--device", "cpu", "-q"])


@pytest.mark.parametrize("backbone", ["page4d-mask:tiny:0", "tiny:0"])  # windowed (with the dynamic mask), streaming
def test_geometry_only_writes_what_a_full_run_writes_for_geometry(frames, tmp_path, backbone):
    geo, full = tmp_path / "geo", tmp_path / "full"
    windows = ["--window", "3", "--overlap", "1"]
    summary = _run("--source", str(frames / "frames"), "--geometry-only", "--backbone", backbone, "--out", str(geo),
                   *windows)
    assert summary["written"] == 5 and summary["fused_points"] > 0
    layout = OutputLayout(geo)
    assert not (geo / "fields").exists() and not (geo / "pca").exists() and not (geo / "rgb").exists()
    meta = json.loads(layout.meta.read_text())
    assert meta["decoder"] is None and meta["lang_dim"] is None and meta["settings"]["fields"] is False
    assert meta["backbone_id"] == backbone.replace(":tiny:0", "-tiny-random-seed0").replace("tiny:0",
                                                                                         "tiny-random-seed0")

    from model.backbones import load_backbone

    cfg = load_backbone(backbone)[0].config
    torch.manual_seed(0)
    decoder = dec.SemanticBridgingDecoder(dec.DecoderConfig.tiny(dim_in=2 * cfg.embed_dim, layers=cfg.dpt_layers))
    save_decoder_file(decoder, tmp_path / "decoder.safetensors")
    _run("--source", str(frames / "frames"), "--decoder", str(tmp_path / "decoder.safetensors"), "--backbone",
         backbone, "--out", str(full), "--no-pca", "--no-rgb", "--no-tokens", *windows)
    assert json.loads(layout.cameras.read_text())["frames"] == json.loads(
        OutputLayout(full).cameras.read_text())["frames"]
    names = ("depth", "confidence", "extrinsics", "intrinsics", "valid")
    for k in KEYS:
        a, _ = read_depth(layout.depth(k), names)
        b, _ = read_depth(OutputLayout(full).depth(k), names)
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
        assert layout.points(k).read_bytes() == OutputLayout(full).points(k).read_bytes()
        assert layout.dynamic(k).is_file() == backbone.startswith("page4d")

    again = _run("--source", str(frames / "frames"), "--geometry-only", "--backbone", backbone, "--out", str(geo),
                 *windows)
    assert again["skipped"] == 5 and again["written"] == 0  # a finished geometry-only output resumes as done


@pytest.mark.parametrize(("argv", "says"), [
    (["--backbone", "tiny"], "--decoder is required"),
    (["--geometry-only"], "--geometry-only needs the backbone"),
    (["--geometry-only", "--backbone", "tiny", "--decoder", "d"], "--decoder was given"),
    (["--geometry-only", "--backbone", "tiny", "--no-geometry"], "--no-geometry was given"),
])
def test_geometry_only_refuses_what_it_cannot_do_in_one_line(frames, tmp_path, capsys, argv, says):
    with pytest.raises(UserExit) as e:
        _run("--source", str(frames / "frames"), "--out", str(tmp_path / "o"), *argv)
    assert e.value.code == 2 and says in str(e.value)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "o").exists()
