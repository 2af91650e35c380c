"""Inference (``python -m inference.run``) on bad inputs, and killed-then-resumed runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from model.decoder import DecoderConfig, SemanticBridgingDecoder
from model.streamvggt.config import StreamVGGTConfig
from tests.reliability.conftest import (
    H,
    W,
    assert_clean_error,
    frames,
    leftovers,
    run_module,
    tree_bytes,
    tree_diff,
)
from tests.reliability.test_semantics import kill_at


def infer(src, out, decoder, *extra, backbone="tiny"):
    return run_module("inference.run", "--source", src, "--out", out, "--decoder", decoder, "--device", "cpu",
                      "--backbone", backbone, "--no-pca", "-q", *extra)


def test_missing_and_empty_sources(tmp_path, decoder_file):
    assert_clean_error(infer(tmp_path / "nope", tmp_path / "o1", decoder_file), mentions=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert_clean_error(infer(tmp_path / "empty", tmp_path / "o2", decoder_file), mentions=tmp_path / "empty")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2" / "fields").exists()


@pytest.mark.parametrize("damage", ["zero-byte", "truncated", "not-an-image"])
def test_damaged_frame_is_named(tmp_path, decoder_file, damage):
    src = frames(tmp_path / "f", 3)
    bad = src / "000002.png"
    data = bad.read_bytes()
    bad.write_bytes({"zero-byte": b"", "truncated": data[: len(data) // 3], "not-an-image": b"hello"}[damage])
    r = infer(src, tmp_path / "out", decoder_file, "--chunk", "1")
    assert_clean_error(r, mentions=bad)
    assert leftovers(tmp_path / "out") == []
    assert not (tmp_path / "out" / "fields" / "000002.safetensors").exists()


def test_frame_of_another_size_mid_video(tmp_path, decoder_file):
    src = frames(tmp_path / "f", 3)
    Image.new("RGB", (W + 14, H), (1, 2, 3)).save(src / "000003.png")
    assert_clean_error(infer(src, tmp_path / "out", decoder_file), mentions=src / "000003.png")
    assert leftovers(tmp_path / "out") == []


def test_bad_decoder_files(tmp_path):
    src = frames(tmp_path / "f", 1)
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    assert_clean_error(infer(src, tmp_path / "o", fake), mentions=fake)
    assert_clean_error(infer(src, tmp_path / "o", tmp_path / "missing"), mentions=tmp_path / "missing")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert_clean_error(infer(src, tmp_path / "o", empty), mentions=empty)


def test_backbone_other_than_the_decoders_is_refused(tmp_path):
    from training.checkpoint import save_checkpoint

    cfg = StreamVGGTConfig.tiny()
    dec = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=2 * cfg.embed_dim, layers=tuple(cfg.dpt_layers)))
    save_checkpoint(tmp_path / "run", 1, dec, None, {"decoder_config": dec.config.to_dict(),
                                                     "token_info": {"backbone": "tiny-random-seed5"}})
    src = frames(tmp_path / "f", 1)
    line = assert_clean_error(infer(src, tmp_path / "o", tmp_path / "run", backbone="tiny:0"))
    assert "tiny-random-seed5" in line and "tiny-random-seed0" in line
    assert infer(src, tmp_path / "o", tmp_path / "run", backbone="tiny:5").returncode == 0


def test_json_outputs_are_valid_json_even_with_infinite_values(tmp_path):
    from utils.io import save_json_atomic

    save_json_atomic({"focal": float("inf"), "nested": [float("nan"), 1.5, np.float32(np.inf)]}, tmp_path / "x.json")

    def refuse(name):
        raise ValueError(f"bare {name} in JSON")

    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=refuse) == {
        "focal": None, "nested": [None, 1.5, None]}


@pytest.mark.parametrize("nth", [3, 6], ids=["between-chunks", "mid-chunk"])
def test_killed_inference_resumes_to_the_same_bytes(tmp_path, decoder_file, nth):
    """SIGKILL right after the ``nth`` frame's fields file (a frame's last file) is written, then the same command
    again. With chunks of 2, frame 6 ends a chunk; frame 3 leaves frame 4 of its chunk to do: the decoder's and the
    depth head's last bits depend on their batch size (measured), so the resumed run must predict that chunk whole
    to write the bytes of an uninterrupted run. The kill point is reached deterministically (no race with a
    clock: a busy CI box once killed a run later than planned, at a point no test here had reached)."""
    src = frames(tmp_path / "f", 8)
    args = ["--chunk-size", "2", "--point-stride", "3"]
    assert infer(src, tmp_path / "a", decoder_file, *args).returncode == 0
    assert infer(src, tmp_path / "b", decoder_file, *args).returncode == 0
    assert tree_diff(tmp_path / "a", tmp_path / "b") == []  # two runs, the same bytes
    out = tmp_path / "c"
    kill_at(tmp_path, tmp_path / "stopped.marker", ("inference.pipeline", "write_fields", "fields", nth, "after"),
            "inference.run", "--source", str(src), "--out", str(out), "--decoder", str(decoder_file), "--device",
            "cpu", "--backbone", "tiny", "--no-pca", "-q", *args)
    assert sorted(p.name for p in (out / "fields").glob("*.safetensors")) == [f"{i:06d}.safetensors"
                                                                              for i in range(1, nth + 1)]
    assert json.loads((out / "meta.json").read_text())["run"]["decoder"] == str(decoder_file.resolve())
    assert infer(src, out, decoder_file, *args).returncode == 0
    assert leftovers(out) == []
    assert tree_diff(out, tmp_path / "a") == []


def test_a_rerun_made_otherwise_is_refused_and_changes_nothing(tmp_path, decoder_file):
    """A folder keeps the frames of the run that made it: a rerun with another decoder, another autoencoder or a
    setting that shapes each frame's files would mix two models in one output, so it is refused in one line naming
    meta.json and what differs, before anything is written (the autoencoder copy included); --overwrite
    recomputes. A rerun with the same inputs named from another working folder resumes."""
    from model.autoencoder import FeatureAutoencoder
    from model.decoder_io import save_decoder_file

    cfg = StreamVGGTConfig.tiny()
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_decoder_file(SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=2 * cfg.embed_dim,
                                                                 layers=tuple(cfg.dpt_layers))), other)
    for seed in (0, 1):
        torch.manual_seed(seed)
        FeatureAutoencoder(in_dim=512).save(tmp_path / f"ae{seed}")
    src, out = frames(tmp_path / "f", 3), tmp_path / "out"
    base = ["--chunk-size", "2", "--autoencoder", tmp_path / "ae0"]
    assert infer(src, out, decoder_file, *base).returncode == 0
    (out / "fields" / "000003.safetensors").unlink()  # as a killed run leaves it: one frame to do
    before = tree_bytes(out)
    for decoder, extra, differs in ((other, base, "decoder was"), (decoder_file, [*base, "--point-stride", "3"],
                                                                    "point_stride was 2, now 3"),
                                    (decoder_file, ["--chunk-size", "2", "--autoencoder", tmp_path / "ae1"], "ae1")):
        line = assert_clean_error(infer(src, out, decoder, *extra), mentions=out / "meta.json")
        assert differs in line and "--overwrite" in line, line
        assert tree_bytes(out) == before
    meta = (out / "meta.json").read_bytes()
    for damaged in (b'{"run": ', b"[1, 2]"):  # a damaged or foreign meta.json: one line too
        (out / "meta.json").write_bytes(damaged)
        assert_clean_error(infer(src, out, decoder_file, *base), mentions=out / "meta.json")
    (out / "meta.json").write_bytes(meta)
    tokens = tmp_path / "elsewhere" / "tokens"  # a token cache: never written into, even with --overwrite
    tokens.mkdir(parents=True)
    (tokens / "meta.json").write_text('{"format": "langvggt4d-tokens", "version": 1}')
    line = assert_clean_error(infer(src, tokens, decoder_file, "--overwrite"), mentions=tokens / "meta.json")
    assert "another tool" in line and sorted(p.name for p in tokens.iterdir()) == ["meta.json"]
    empty = tmp_path / "failed-before-its-first-frame"  # what a run that wrote no frame leaves: its meta.json
    empty.mkdir()
    (empty / "meta.json").write_bytes(meta)
    assert infer(src, empty, other, *base).returncode == 0
    r = run_module("inference.run", "--source", "f", "--out", "out", "--decoder", decoder_file, "--device", "cpu",
                   "--backbone", "tiny:0", "--no-pca", "-q", "--chunk-size", "2", "--autoencoder", "ae0", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout)["written"] == 1, r.stderr[-2000:]
    assert infer(src, out, other, "--overwrite", *base).returncode == 0
    assert json.loads((out / "meta.json").read_text())["run"]["decoder"] == str(other.resolve())


def test_a_moved_fields_folder_is_queried_from_anywhere(tmp_path, decoder_file):
    import shutil

    from model.autoencoder import FeatureAutoencoder

    torch.manual_seed(0)
    FeatureAutoencoder(in_dim=512).save(tmp_path / "ae")
    src = frames(tmp_path / "f", 2)
    assert infer(src, tmp_path / "out", decoder_file, "--autoencoder", tmp_path / "ae", "--no-geometry").returncode == 0
    shutil.rmtree(tmp_path / "ae")  # the original autoencoder is gone ...
    shutil.move(tmp_path / "out", tmp_path / "elsewhere" / "moved")  # ... and the folder moved
    (tmp_path / "cwd").mkdir()
    r = run_module("eval.query", "--fields", tmp_path / "elsewhere" / "moved", "--text", "red ball", "--hash-text",
                   "--device", "cpu", "--no-video", "--no-ply", "-q", cwd=tmp_path / "cwd")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "elsewhere" / "moved" / "queries").glob("*/mask/*.png"))) == 2


def test_inference_defaults_to_the_decoders_training_preprocessing(tmp_path):
    from training.checkpoint import save_checkpoint

    cfg = StreamVGGTConfig.tiny()
    dec = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=2 * cfg.embed_dim, layers=tuple(cfg.dpt_layers)))
    save_checkpoint(tmp_path / "run", 1, dec, None, {
        "decoder_config": dec.config.to_dict(),
        "token_info": {"backbone": "tiny-random-seed0", "preprocess": {"mode": "resize", "target_width": 28}}})
    src = frames(tmp_path / "f", 1)
    r = infer(src, tmp_path / "a", tmp_path / "run", "--no-geometry")
    assert r.returncode == 0 and "trained at width" not in r.stderr, r.stderr[-2000:]
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["preprocess"] == {"target_width": 28, "mode": "resize"}
    r = infer(src, tmp_path / "b", tmp_path / "run", "--no-geometry", "--target-width", "42")
    assert r.returncode == 0 and "trained at width 28" in r.stderr, r.stderr[-2000:]
