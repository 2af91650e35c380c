"""Resumes that check what they keep, interruption, concurrency and full or read-only disks (issue 24), on
``preprocess.extract_tokens`` (the longest command):

- a kept token file that is not what the run writes (one token short with a self-consistent header, a flipped
  data byte, another frame's file, a truncated file) is rewritten, and the folder ends with the bytes of an
  uninterrupted run;
- Ctrl-C (SIGINT) and SIGTERM end with one line saying how many frames are kept (exit code 130 / 143), nothing
  temporary left, and the rerun gives the bytes of an uninterrupted run;
- a second process on the same tokens folder refuses with one line naming the owner's pid; a lock left by a killed
  process is taken over;
- a read-only or full disk: one line naming the folder or file, nothing half-written.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S
from tests.reliability.conftest import assert_clean_error, frames, leftovers
from tests.reliability.test_boundary import one_token_short
from tests.reliability.test_semantics import DRIVER, run_main, snapshot

TINY = ("--backbone", "tiny", "--device", "cpu", "--no-progress")
N = 5


def extract(argv, capsys):
    from preprocess.extract_tokens import main

    return run_main(main, argv, capsys)


def _no_leftovers(root: Path) -> None:
    assert leftovers(root) == [], leftovers(root)
    assert list(root.rglob("*.lock")) == []


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    frames(tmp_path / "f", N)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def uninterrupted(work: Path, capsys) -> dict[str, bytes]:
    """The tokens folder of an uninterrupted run in ``work`` (the folder is removed again)."""
    shutil.rmtree(work / "f" / "tokens", ignore_errors=True)
    r = extract(["f", *TINY], capsys)
    assert r.returncode == 0, r.stderr
    out = snapshot(work / "f" / "tokens")
    shutil.rmtree(work / "f" / "tokens")
    return out


# ----------------------------------------------------------------------------------- resume checks what it keeps
def _flip_a_data_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[-7] ^= 0x40
    p.write_bytes(bytes(data))


def _another_frames_file(p: Path) -> None:
    shutil.copy(p.with_name("000001.safetensors"), p)


def _truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-100])


@pytest.mark.parametrize("damage", [one_token_short, _flip_a_data_byte, _another_frames_file, _truncated],
                         ids=["one-token-short", "flipped-byte", "another-frames-file", "truncated"])
def test_a_bad_kept_file_is_rewritten_to_the_uninterrupted_bytes(work, capsys, damage):
    ref = uninterrupted(work, capsys)
    assert extract(["f", *TINY], capsys).returncode == 0
    damage(work / "f" / "tokens" / "000003.safetensors")
    assert snapshot(work / "f" / "tokens") != ref
    r = extract(["f", *TINY], capsys)
    assert r.returncode == 0, r.stderr
    assert "written 1," in r.stdout, r.stdout  # only the bad frame, after a replay of the frames before it
    assert snapshot(work / "f" / "tokens") == ref
    _no_leftovers(work)


def test_readers_refuse_a_short_token_file_before_stacking(work, capsys):
    from preprocess.token_cache import TokenCache, TokenCacheError

    assert extract(["f", *TINY], capsys).returncode == 0
    one_token_short(work / "f" / "tokens" / "000002.safetensors")
    cache = TokenCache(work / "f" / "tokens")
    with pytest.raises(TokenCacheError, match=r"000002\.safetensors: tensor layer_00 is F16 \[\d+, \d+\] but"):
        cache.load("000002")
    with pytest.raises(TokenCacheError, match=r"000002\.safetensors"):
        cache.validate()


@pytest.mark.parametrize("damage", [_truncated, lambda p: p.write_bytes(p.read_bytes() + b"\0")],
                         ids=["truncated", "one-byte-too-many"])
def test_semantics_resume_rewrites_a_bad_kept_frame(tmp_path, monkeypatch, damage):
    """extract_semantics keeps the finished frames of its ``.partial`` folder on a resume only when each ``.npy``
    matches its header; the resumed folder has the bytes of an uninterrupted run."""
    import preprocess.extract_semantics as es
    from model.text import HashTextEncoder
    from tests.reliability.test_semantics import make_scene

    ref = make_scene(tmp_path / "ref" / "scene")
    shutil.copytree(ref, tmp_path / "w" / "scene")
    es.extract_oracle(ref, HashTextEncoder(), video=False, progress=False)
    scene = tmp_path / "w" / "scene"
    real, calls = es._write_frame, []

    def stop(out, key, s, f):
        calls.append(key)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real(out, key, s, f)

    monkeypatch.setattr(es, "_write_frame", stop)
    with pytest.raises(KeyboardInterrupt, match="3 finished frames kept"):
        es.extract_oracle(scene, HashTextEncoder(), video=False, progress=False)
    monkeypatch.setattr(es, "_write_frame", real)
    damage(scene / ".clip_features.partial" / "000002_s.npy")
    es.extract_oracle(scene, HashTextEncoder(), video=False, progress=False)
    assert snapshot(scene) == snapshot(ref)


# ----------------------------------------------------------------------------------- Ctrl-C and SIGTERM
def _stop_and_signal(work: Path, sig: int, nth: int) -> subprocess.CompletedProcess:
    """Run extract_tokens in a fresh interpreter; just before its ``nth`` token-file write, send ``sig``."""
    marker = work / "stopped.marker"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TQDM_DISABLE="1")
    env.pop("LANGVGGT4D_DEBUG", None)
    # a user's Ctrl-C: SIGINT at its default, even when this suite runs as a background job (which starts with
    # SIGINT ignored, and Python keeps an ignored SIGINT ignored: the child would sleep through the signal)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(marker), "preprocess.token_cache", "write_token_file",
                             ".safetensors", str(nth), "before", "preprocess.extract_tokens", "f", *TINY],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + HANG_GUARD_S
    try:
        while not marker.exists():
            assert proc.poll() is None, f"ended (exit {proc.returncode}) before the stop:\n{proc.stderr.read()}"
            assert time.monotonic() < deadline, "stop point not reached"
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    marker.unlink()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_says_what_it_kept_and_resumes_to_the_same_bytes(work, capsys, sig, code):
    r = _stop_and_signal(work, sig, nth=3)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith(("INFO ", "WARNING "))]
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert lines == [f"error: interrupted by {signal.Signals(sig).name}: 2 of {N} frames kept (f/tokens); re-run "
                     "the same command to resume (it gives the bytes of an uninterrupted run)"], r.stderr
    _no_leftovers(work)
    assert sorted(p.name for p in (work / "f" / "tokens").iterdir()) == [
        "000001.safetensors", "000002.safetensors", "meta.json"]
    r = extract(["f", *TINY], capsys)
    assert r.returncode == 0 and "written 3," in r.stdout, r.stdout + r.stderr
    resumed = snapshot(work / "f" / "tokens")
    assert resumed == uninterrupted(work, capsys)


# ----------------------------------------------------------------------------------- one writer per folder
HOLDER = r"""
import sys, time
from utils.lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_process_on_the_same_folder_refuses_and_a_dead_owners_lock_is_taken_over(work, capsys):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, "f/tokens"], cwd=work, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = extract(["f", *TINY], capsys)
        line = assert_clean_error(r, mentions="f/tokens")
        assert f"another run (pid {holder.pid}) is writing this tokens folder" in line, line
        assert not (work / "f" / "tokens").exists()  # refused before writing anything
    finally:
        holder.kill()  # SIGKILL: the lock file stays, with a dead pid; the kernel dropped the lock
        holder.wait()
    assert (work / "f" / ".tokens.lock").read_text().strip() == str(holder.pid)
    r = extract(["f", *TINY], capsys)
    assert r.returncode == 0, r.stderr
    _no_leftovers(work)


def test_the_same_lock_twice_in_one_process_refuses(tmp_path):
    from utils.lock import OutputLockedError, output_lock

    with output_lock(tmp_path / "out"):
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
            with output_lock(tmp_path / "out"):
                pass
    with output_lock(tmp_path / "out"):  # released: free again
        pass
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------- read-only and full disks
def test_read_only_output_disk_is_one_line(work, capsys, monkeypatch):
    import utils.io

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(utils.io.tempfile, "mkstemp", read_only)
    r = extract(["f", *TINY], capsys)
    line = assert_clean_error(r, mentions="f/tokens")
    assert line.startswith("error: read-only file system (")
    _no_leftovers(work)
    assert list((work / "f" / "tokens").iterdir()) == []


def test_full_disk_mid_run_is_one_line_and_the_rerun_gives_the_same_bytes(work, capsys, monkeypatch):
    import utils.io

    real, calls = utils.io.save_file, []

    def fills_up(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 3:
            Path(filename).write_bytes(b"\0" * 100)  # a half-written temp file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(utils.io, "save_file", fills_up)
    r = extract(["f", *TINY], capsys)
    line = assert_clean_error(r, mentions="f/tokens/000003.safetensors")
    assert line.startswith("error: no space left on the device (")
    _no_leftovers(work)
    monkeypatch.setattr(utils.io, "save_file", real)
    assert extract(["f", *TINY], capsys).returncode == 0
    assert snapshot(work / "f" / "tokens") == uninterrupted(work, capsys)


# ----------------------------------------------------------------------------------- the other long commands
def test_interrupted_inference_says_how_many_frames_are_kept(work, capsys, monkeypatch, decoder_file):
    import inference.pipeline as pl
    from inference.run import main

    real, calls = pl._write_frame, []

    def stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pl, "_write_frame", stop)
    argv = ["--source", "f", "--decoder", str(decoder_file), "--out", "out", "--backbone", "tiny", "--device", "cpu",
            "--chunk", "1", "--no-geometry", "--no-pca", "--no-rgb"]
    r = run_main(main, argv, capsys)
    assert r.returncode == 130, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert lines == [f"error: interrupted by SIGINT: 2 of {N} frames kept (out); re-run the same command to resume "
                     "(finished frames are kept)"], r.stderr
    assert "Traceback" not in r.stderr
    _no_leftovers(work)
    monkeypatch.setattr(pl, "_write_frame", real)
    summary = main(argv)  # resumes: the frames on disk are kept
    assert (summary["written"], summary["skipped"]) == (3, 2), summary
    _no_leftovers(work)


def test_sigterm_in_extract_semantics_is_exit_143_with_the_kept_frames(tmp_path, monkeypatch, capsys):
    import preprocess.extract_semantics as es
    from tests.reliability.test_semantics import make_scene
    from utils.cli import Terminated

    make_scene(tmp_path / "scene")
    monkeypatch.chdir(tmp_path)
    real, calls = es._write_frame, []

    def stop(out, key, s, f):
        calls.append(key)
        if len(calls) == 3:
            raise Terminated()  # what the SIGTERM handler raises in the main thread
        real(out, key, s, f)

    monkeypatch.setattr(es, "_write_frame", stop)
    r = run_main(es.main, ["--scene", "scene", "--mode", "oracle", "--text-encoder", "hash", "--device", "cpu",
                           "--no-progress"], capsys)
    assert r.returncode == 143, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert lines == ["error: interrupted by SIGTERM: 2 finished frames kept (scene/.clip_features.partial); re-run "
                     "the same command to resume"], r.stderr
    assert not list(tmp_path.rglob("*.lock"))


def test_inference_resume_rewrites_truncated_outputs_to_the_uninterrupted_bytes(work, capsys, decoder_file):
    from inference.run import main

    argv = ["--source", "f", "--decoder", str(decoder_file), "--out", "out", "--backbone", "tiny", "--device", "cpu",
            "--no-geometry"]
    main(argv)
    ref = snapshot(work / "out")
    _truncated(work / "out" / "fields" / "000002.safetensors")
    rgb = sorted((work / "out").rglob("000004.png"))
    assert rgb, sorted(ref)
    for p in rgb:
        p.write_bytes(p.read_bytes()[:-20])
    summary = main(argv)
    assert (summary["written"], summary["skipped"]) == (2, N - 2), summary
    assert snapshot(work / "out") == ref
    _no_leftovers(work)


def test_interrupted_training_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import training.loop as loop
    import training.trainer as tr
    from tests.training.helpers import make_tiny_scene
    from utils.cli import run_cli

    make_tiny_scene(tmp_path / "scene", n_frames=4, eval_frames=(1,))
    monkeypatch.chdir(tmp_path)
    real, calls = loop._train_epoch, []

    def stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", stop)
    r = run_main(lambda argv: run_cli(tr.main, argv), ["--scenes", "scene", "--out", "run", "--decoder", "tiny",
                                                        "--no-progress", "--threads", "1", "--epochs", "3",
                                                        "--batch-size", "2", "--save-every", "1"], capsys)
    assert r.returncode == 130, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert lines == ["error: interrupted by SIGINT: the checkpoints saved so far are kept (run); add --resume to the "
                     "same command to continue from the last one"], r.stderr
    assert (tmp_path / "run" / "checkpoint_epoch_1").is_dir()
    assert leftovers(tmp_path) == []
