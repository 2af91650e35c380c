"""``python -m eval.query`` on bad inputs: one error line each, nothing written."""

from __future__ import annotations

from tests.reliability.conftest import assert_clean_error, leftovers, run_module


def _query(fields, *extra, cwd=None):
    return run_module("eval.query", "--fields", fields, "--text", "red ball", "--hash-text", "--device", "cpu",
                      "--no-video", "--no-ply", "-q", *extra, cwd=cwd)


def test_missing_and_empty_fields_folders(tmp_path):
    assert_clean_error(_query(tmp_path / "nope"), mentions=tmp_path / "nope")
    (tmp_path / "empty" / "fields").mkdir(parents=True)
    assert_clean_error(_query(tmp_path / "empty"), mentions=tmp_path / "empty")
    assert not (tmp_path / "empty" / "queries").exists()


def test_fake_fields_file_and_bad_autoencoder(tmp_path):
    (tmp_path / "out" / "fields").mkdir(parents=True)
    fake = tmp_path / "out" / "fields" / "000001.safetensors"
    fake.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    assert_clean_error(_query(tmp_path / "out", "--autoencoder", "none"), mentions=fake)
    bad_ae = tmp_path / "ae.pth"
    bad_ae.write_bytes(b"not a checkpoint")
    assert_clean_error(_query(tmp_path / "out", "--autoencoder", bad_ae), mentions=bad_ae)
    assert leftovers(tmp_path) == []


def test_queries_with_another_text_encoder_than_the_targets(tmp_path):
    """Fields decoded by an autoencoder trained on features of one text encoder, queried with another: refused
    (one line naming the autoencoder's config.json and the flags of the right encoder); the right one runs."""
    from model.autoencoder import FeatureAutoencoder
    from tests.viewer.synth import make_output

    paths = make_output(tmp_path / "o", frames=4, width=48, height=32)
    out = paths["out"]
    from inference.outputs import OutputLayout

    ae = OutputLayout(out).autoencoder()  # the copy inference made: rewrite it with a recorded encoder
    assert ae.is_dir()
    model = FeatureAutoencoder.load(ae)
    model.save(ae, extra={"text_encoder": "ViT-B-16:laion2b_s34b_b88k"})
    line = assert_clean_error(_query(out), mentions=ae / "config.json")
    assert "--clip-model ViT-B-16 --clip-pretrained laion2b_s34b_b88k" in line
    assert not (out / "queries").exists()
    model.save(ae, extra={"text_encoder": "hash-bow(dim=512,seed=0)"})
    r = _query(out)
    assert r.returncode == 0, r.stderr[-2000:]
