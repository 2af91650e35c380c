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
