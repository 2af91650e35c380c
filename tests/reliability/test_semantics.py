"""Reliability of ``preprocess.extract_semantics`` (issue 11): killed at any moment (SIGKILL) and re-run, it gives
the bytes of an uninterrupted run and leaves no temporary file; two uninterrupted runs give the same bytes; a
zero-byte or truncated frame ends in one ``error:`` line naming it, with nothing written.

The kill is real: the command runs in a fresh interpreter (:data:`DRIVER`) where one library function is wrapped
so that, at the chosen call, it writes a marker file and waits; the test polls for the marker, then SIGKILLs the
process. Nothing in the program under test reads a hook. The helpers here are also used by test_autoencoder.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S
from tests.reliability.conftest import assert_clean_error, leftovers, run_module

# Runs ``python -m <module> <args>`` as its ``__main__`` after wrapping ``<owner>.<attr>`` (a library function the
# module looks up at call time): at the <nth> call whose arguments' text contains <match>, it writes <marker> and
# sleeps, ``before`` or ``after`` the real call, until the test kills it.
DRIVER = r"""
import importlib, runpy, sys, time
from pathlib import Path

marker, owner, attr, match, nth, when, module = sys.argv[1:8]
obj = importlib.import_module(owner)
real = getattr(obj, attr)
calls = [0]

def stop_here():
    Path(marker).write_text("stopped")
    time.sleep(600)

def wrapped(*args, **kwargs):
    hit = match in " ".join(map(str, args))
    if hit:
        calls[0] += 1
    if hit and calls[0] == int(nth) and when == "before":
        stop_here()
    out = real(*args, **kwargs)
    if hit and calls[0] == int(nth) and when == "after":
        stop_here()
    return out

setattr(obj, attr, wrapped)
sys.argv = [module, *sys.argv[8:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def kill_at(cwd: Path, marker: Path, point: tuple[str, str, str, int, str], module: str, *args: str,
            timeout: float = HANG_GUARD_S) -> None:
    """Run ``python -m module args`` in ``cwd`` until it reaches ``point`` = (owner module, function, text in the
    call's arguments, n-th such call, ``before``/``after``), then SIGKILL it."""
    owner, attr, match, nth, when = point
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.pop("LANGVGGT4D_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(marker), owner, attr, match, str(nth), when, module,
                             *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the run ended (exit {proc.returncode}) before the kill point {point}:\n"
                            f"{proc.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"kill point {point} not reached in {timeout} s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=HANG_GUARD_S)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        marker.unlink(missing_ok=True)


def run_main(main, argv, capsys) -> SimpleNamespace:
    """An entry point called in this process (cheaper than a fresh interpreter on a 2-core machine), with what
    :func:`assert_clean_error` reads: the exit code and the captured stderr."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
        code = code if isinstance(code, int) else 0  # eval.protocol.runner's main returns its summary
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    return SimpleNamespace(returncode=code, stderr=cap.err, stdout=cap.out)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) -> its bytes."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def assert_same_files(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    assert sorted(a) == sorted(b), f"different files: only in one {sorted(set(a) ^ set(b))}"
    differ = [k for k in a if a[k] != b[k]]
    assert not differ, f"different bytes: {differ}"


def make_scene(root: Path) -> Path:
    from preprocess import make_synthetic

    assert make_synthetic.main(["--out", str(root), "--frames", "8", "--width", "64", "--height", "48",
                                "--no-progress"]) == 0
    return root


# the weight-free hash text encoder keeps each fresh interpreter cheap (no open_clip import); the batch dependence
# of a real text encoder is covered in-process by test_resume_with_a_batch_dependent_text_encoder
ORACLE = ("--scene", "scene", "--mode", "oracle", "--text-encoder", "hash", "--device", "cpu", "--no-progress")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return make_scene(tmp_path_factory.mktemp("sem-template") / "scene")


def fresh(template: Path, where: Path) -> Path:
    """``where/scene``: a copy of the template scene (the commands run in ``where`` with relative paths)."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copytree(template, where / "scene")
    return where


@pytest.fixture(scope="module")
def reference(template, tmp_path_factory) -> dict[str, bytes]:
    """The files of one uninterrupted run."""
    work = fresh(template, tmp_path_factory.mktemp("sem-ref"))
    r = run_module("preprocess.extract_semantics", *ORACLE, cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    return snapshot(work)


def test_two_uninterrupted_runs_same_bytes(template, reference, tmp_path):
    work = fresh(template, tmp_path / "w")
    r = run_module("preprocess.extract_semantics", *ORACLE, cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    snap = snapshot(work)
    assert "scene/clip_features/meta.json" in snap and "scene/video_features/meta.json" in snap
    assert_same_files(snap, reference)


KILL_POINTS = {
    # second (time-sensitive) phase, frame 3 half written: its _f.npy is there, its _s.npy not yet
    "video-phase-half-frame": ("utils.io", "save_npy_atomic", ".video_features.partial", 5, "after"),
    # second phase, inside an atomic write: the temporary file is complete but not renamed yet
    "video-phase-temp-file": ("os", "replace", ".video_features.partial", 4, "before"),
}


@pytest.mark.parametrize("point", list(KILL_POINTS), ids=list(KILL_POINTS))
def test_killed_in_second_phase_resumes_to_same_bytes(template, reference, tmp_path, point):
    work = fresh(template, tmp_path / "w")
    kill_at(work, tmp_path / "stopped", KILL_POINTS[point], "preprocess.extract_semantics", *ORACLE)
    assert (work / "scene" / "clip_features").is_dir() and (work / "scene" / ".video_features.partial").is_dir()
    r = run_module("preprocess.extract_semantics", *ORACLE, cwd=work)  # the same command, no --overwrite
    assert r.returncode == 0, r.stderr[-3000:]
    assert leftovers(work) == []
    assert_same_files(snapshot(work), reference)


def test_resume_with_a_batch_dependent_text_encoder(template, tmp_path, monkeypatch):
    """A text row may depend on the other rows of its batch (a real encoder's may, in the last bits, on some CPUs'
    kernels and not on others). A resumed second phase used to embed only the captions of the frames it still had
    to do, so its rows differed from an uninterrupted run's; every text is now embedded up front in one batch.
    The tiny CLIP is made batch-dependent on purpose here (a shift by the batch size, on every CPU), interrupted
    in-process (an exception at the 3rd time-sensitive frame), then re-run."""
    import numpy as np
    import torch

    from model.clip import ClipEncoder
    from preprocess import extract_semantics as es

    class BatchDependent:
        """The tiny CLIP, each text row shifted by its batch's size."""

        def __init__(self, inner: ClipEncoder):
            self.inner = inner

        def encode_text(self, texts):
            rows = self.inner.encode_text(texts)
            return torch.nn.functional.normalize(rows + 1e-3 * len(texts), dim=-1)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    enc = BatchDependent(ClipEncoder.tiny(seed=0))
    texts = ["glass", "full glass", "empty glass", "red ball"]
    together = enc.encode_text(texts).numpy()
    assert all(not np.array_equal(together[i], enc.encode_text([t]).numpy()[0]) for i, t in enumerate(texts))

    ref = fresh(template, tmp_path / "ref") / "scene"
    es.extract_oracle(ref, enc, progress=False)
    scene = fresh(template, tmp_path / "w") / "scene"
    real, calls = es._write_frame, []

    def crash(out, key, s, f):
        if out.final.name == "video_features":
            calls.append(key)
            if len(calls) == 3:
                raise KeyboardInterrupt("simulated kill")
        real(out, key, s, f)

    monkeypatch.setattr(es, "_write_frame", crash)
    with pytest.raises(KeyboardInterrupt):
        es.extract_oracle(scene, enc, progress=False)
    monkeypatch.setattr(es, "_write_frame", real)
    assert (scene / "clip_features").is_dir() and (scene / ".video_features.partial").is_dir()
    es.extract_oracle(scene, enc, progress=False)  # no overwrite: the first phase is kept, the second resumed
    assert_same_files(snapshot(scene), snapshot(ref))


def _zero_byte(p: Path) -> None:
    p.write_bytes(b"")


def _truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


@pytest.mark.parametrize("damage", [_zero_byte, _truncated], ids=["zero-byte", "truncated"])
@pytest.mark.parametrize("mode", ["oracle", "clip"])
def test_broken_frame_is_one_clean_error(template, tmp_path, damage, mode, capsys, monkeypatch):
    from preprocess import extract_semantics

    work = fresh(template, tmp_path / "w")
    frame = work / "scene" / "rgb" / "2x" / "000005.png"
    damage(frame)
    before = snapshot(work)
    monkeypatch.chdir(work)
    r = run_main(extract_semantics.main, ["--scene", "scene", "--mode", mode, "--clip", "tiny", "--device", "cpu",
                                          "--no-progress"], capsys)
    assert_clean_error(r, mentions=Path("scene/rgb/2x/000005.png"))
    assert snapshot(work) == before  # nothing written, no partial folder
