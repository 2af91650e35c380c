"""Training (``train.py``): killed-then-resumed runs give the bytes of an uninterrupted run, and bad or mismatched
inputs end in one ``error:`` line naming the file (exit code 2, no traceback, nothing written).

Most runs are in-process (``run_cli(main, argv)``, the code path of ``train.py``) to keep the tests fast; the runs
that are killed, and one error case, run ``train.py`` in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from preprocess.token_cache import load_token_file, write_token_file
from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S
from tests.reliability.conftest import assert_clean_error, leftovers, run_module
from tests.training.helpers import make_tiny_scene
from training.run_dir import RunDirLock
from training.trainer import main
from utils.cli import run_cli
from utils.io import save_npy_atomic

FEATS = "clip_features-language_features_dim3"
EPOCHS = 4
WALL_CLOCK = {"seconds"}  # the one wall-clock field, in metrics.jsonl only (never in state.json)


def _args(scene, out, *extra, epochs=EPOCHS):
    return ["--scenes", str(scene), "--out", str(out), "--decoder", "tiny", "--no-progress", "--threads", "1",
            "--epochs", str(epochs), "--batch-size", "2", "--lr", "1e-3", "--warmup-epochs", "1", "--save-every", "1",
            *map(str, extra)]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _records(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in WALL_CLOCK}
            for line in path.read_text().splitlines()]


def assert_same_run(a: Path, b: Path) -> None:
    """Every file of run ``b`` has the bytes of run ``a``'s; metrics.jsonl: the same records but ``seconds``."""
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name == "metrics.jsonl":
            assert _records(a / name) == _records(b / name)
            assert [json.loads(x)["epoch"] for x in fb[name].decode().splitlines()] == list(range(1, EPOCHS + 1))
        else:
            assert fa[name] == fb[name], f"{name} differs"
    assert leftovers(a) == [] and leftovers(b) == []


def in_process(argv, capfd) -> subprocess.CompletedProcess:
    """``train.py argv`` in this process, as a CompletedProcess (exit code, captured stdout / stderr)."""
    capfd.readouterr()
    try:
        run_cli(main, argv)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One tiny scene and its uninterrupted run (``EPOCHS`` epochs, a checkpoint every epoch)."""
    root = tmp_path_factory.mktemp("train")
    scene = make_tiny_scene(root / "scene", n_frames=4, grid=(2, 2))
    torch.set_num_threads(1)
    main(_args(scene, root / "full"))
    return scene, root / "full"


# ---------------------------------------------------------------- byte identity, kill and resume


def test_two_uninterrupted_runs_give_the_same_bytes(tmp_path, reference):
    scene, full = reference
    main(_args(scene, tmp_path / "again"))
    assert_same_run(full, tmp_path / "again")
    state = json.loads((full / "checkpoint_epoch_4" / "state.json").read_text())
    # no wall-clock time, pid or run-folder path in state.json (its bytes are compared above, across two folders)
    assert all("seconds" not in h for h in state["history"]) and str(full) not in json.dumps(state)
    assert not {"out", "resume", "stop_at_epoch"} & set(state["args"])
    assert state["token_info"]["backbone"] == "tiny-test" and state["token_info"]["layers"] == [0, 1, 2, 3]


KILLER = """
import os, signal, sys
import training.checkpoint as ck
from utils.io import atomic_path
where, epoch = sys.argv[1], sys.argv[2]
del sys.argv[1:3]
real_json, real_atomic = ck.save_json_atomic, ck.atomic_path
def die():
    os.kill(os.getpid(), signal.SIGKILL)
def dying_json(obj, path):  # "state": the checkpoint's safetensors are written, its state.json half-written
    if where == "state" and f"checkpoint_epoch_{epoch}." in str(path):
        with atomic_path(path) as tmp:
            tmp.write_text('{"partial')
            die()
    real_json(obj, path)
def dying_atomic(path):  # "last": the checkpoint folder is renamed into place, 'last' is not yet replaced
    if where == "last" and path.name == "last" and (path.parent / f"checkpoint_epoch_{epoch}").is_dir():
        die()
    return real_atomic(path)
ck.save_json_atomic, ck.atomic_path = dying_json, dying_atomic
from training.trainer import main
from utils.cli import run_cli
run_cli(main, sys.argv[1:])
"""


def _python(code_or_script: list[str], *args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, *code_or_script, *map(str, args)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("where,epoch", [("state", 2), ("last", 1), ("last", 3)])
def test_killed_while_writing_a_checkpoint_resumes_to_the_same_bytes(tmp_path, reference, capfd, where, epoch):
    scene, full = reference
    run = tmp_path / "run"
    proc = _python(["-c", KILLER, where, str(epoch)], *_args(scene, run))
    _, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    assert len(_records(run / "metrics.jsonl")) == epoch  # the epoch's record is written, its checkpoint is not
    if where == "state":
        assert [p.name for p in run.iterdir() if p.name.startswith(f".checkpoint_epoch_{epoch}.tmp-")]
        assert leftovers(run)
    else:
        assert (run / f"checkpoint_epoch_{epoch}" / "state.json").is_file()
        named = (run / "last").read_text() if (run / "last").exists() else None  # not yet the new folder
        assert named == (None if epoch == 1 else f"checkpoint_epoch_{epoch - 1}\n")
    r = in_process(_args(scene, run, "--resume"), capfd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(full, run)


def test_killed_at_any_moment_after_the_first_checkpoint_resumes_to_the_same_bytes(tmp_path, reference, capfd):
    scene, full = reference
    run = tmp_path / "run"
    proc = _python([str(REPO_ROOT / "train.py")], *_args(scene, run))
    deadline = time.monotonic() + HANG_GUARD_S
    while not (run / "checkpoint_epoch_1").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=HANG_GUARD_S)
    assert (run / "checkpoint_epoch_1").is_dir(), err[-3000:]
    r = in_process(_args(scene, run, "--resume"), capfd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(full, run)


def test_rerun_after_a_kill_before_the_first_checkpoint_starts_over(tmp_path, reference, capfd):
    scene, full = reference
    run = tmp_path / "run"
    run.mkdir()  # what a run killed in epoch 2 (before any checkpoint) leaves: its records, a half-written file
    (run / "metrics.jsonl").write_text('{"epoch": 1, "step": 1, "train_loss": 9.0}\n{"epoch": 2, "st')
    (run / ".metrics.jsonl.k2j3h4.tmp").write_text("{")
    r = in_process(_args(scene, run, "--resume"), capfd)  # nothing to resume: said so, nothing touched
    assert_clean_error(r, mentions=run)
    assert (run / ".metrics.jsonl.k2j3h4.tmp").exists() is False  # stale temporaries go first
    r = in_process(_args(scene, run), capfd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(full, run)


def test_killed_between_the_two_renames_of_a_resave(tmp_path, reference, capfd):
    """Re-saving an epoch moves the old folder aside, then renames the new one in: a kill in between leaves no
    checkpoint_epoch_4/ (which 'last' names). The re-run puts the old one back and drops the new one."""
    scene, full = reference
    run = _copy_run(full, tmp_path / "run")
    os.replace(run / "checkpoint_epoch_4", run / ".checkpoint_epoch_4.old-4242")
    shutil.copytree(run / ".checkpoint_epoch_4.old-4242", run / ".checkpoint_epoch_4.tmp-4242")
    r = in_process(_args(scene, run, "--resume"), capfd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_same_run(full, run)


# ---------------------------------------------------------------- refused with one error line, nothing written


def _unchanged(before: dict[str, bytes], root: Path) -> None:
    assert _files(root) == before
    assert leftovers(root) == []


def _copy_run(full: Path, dst: Path) -> Path:
    shutil.copytree(full, dst)
    return dst


def _damage(scene: Path, case: str) -> Path:
    """Damage ``scene`` (a copy) as ``case`` says; returns the file the error must name."""
    tok = scene / "tokens" / "000002.safetensors"
    s_path, f_path = scene / FEATS / "000002_s.npy", scene / FEATS / "000002_f.npy"
    if case == "token-file-truncated":
        tok.write_bytes(tok.read_bytes()[:-64])
        return tok
    if case == "inf-in-tokens":
        toks, meta = load_token_file(tok, mmap=False)
        toks = [t.clone() for t in toks]
        toks[1][6, 3] = float("inf")
        write_token_file(tok, toks, meta["layers"], {k: v for k, v in meta.items() if k != "sha256"})
        return tok
    seg, rows = np.load(s_path), np.load(f_path)
    if case == "targets-of-another-size":
        save_npy_atomic(np.zeros((4, 20, 28), np.float32), s_path)
    elif case == "index-beyond-rows":
        seg[2, 20, 20] = len(rows)
        save_npy_atomic(seg, s_path)
    elif case == "nan-in-indices":
        seg[1, 5, 5] = np.nan
        save_npy_atomic(seg, s_path)
        return s_path
    elif case == "nan-in-features":
        rows[1, 0] = np.nan
        save_npy_atomic(rows, f_path)
        return f_path
    return s_path


@pytest.mark.parametrize("case", ["token-file-truncated", "inf-in-tokens", "targets-of-another-size",
                                  "index-beyond-rows", "nan-in-indices", "nan-in-features"])
def test_bad_training_data_is_named(tmp_path, reference, capfd, case):
    scene = shutil.copytree(reference[0], tmp_path / "scene")
    bad = _damage(scene, case)
    r = in_process(_args(scene, tmp_path / "run"), capfd)
    assert_clean_error(r, mentions=bad)
    assert not (tmp_path / "run").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("change", ["backbone", "token-width", "layers", "autoencoder-dim"])
def test_resume_and_init_refuse_tokens_of_another_backbone(tmp_path, reference, capfd, change):
    kw = {"backbone": {"backbone": "streamvggt-sha256-0123456789abcdef"}, "token-width": {"dim": 16},
          "layers": {"layers": (0, 1, 2, 4)}, "autoencoder-dim": {"lang_dim": 5}}[change]
    other = make_tiny_scene(tmp_path / "other", n_frames=4, grid=(2, 2), **kw)
    run = _copy_run(reference[1], tmp_path / "run")
    before = _files(run)
    r = in_process(_args(other, run, "--resume", epochs=6), capfd)
    line = assert_clean_error(r, mentions=run / "checkpoint_epoch_4" / "state.json")
    if change != "autoencoder-dim":
        assert str(other / "tokens" / "meta.json") in line
    _unchanged(before, run)
    r = in_process(_args(other, tmp_path / "fresh", "--init", run), capfd)
    assert_clean_error(r, mentions=run)
    assert not (tmp_path / "fresh").exists()
    _unchanged(before, run)


def test_one_frame_scene_at_batch_size_2_is_refused_by_train_py(tmp_path):
    scene = make_tiny_scene(tmp_path / "one", n_frames=1, grid=(2, 2), eval_frames=())
    r = run_module("train.py", *_args(scene, tmp_path / "run", epochs=1))
    line = assert_clean_error(r, mentions=scene)
    assert "--batch-size 1" in line
    assert not (tmp_path / "run").exists() and leftovers(tmp_path) == []


def test_run_folder_misuse_is_refused(tmp_path, reference, capfd):
    scene, full = reference
    run = _copy_run(full, tmp_path / "run")
    before = _files(run)
    # a fresh run into a folder that holds a run would mix the two
    assert "--resume" in assert_clean_error(in_process(_args(scene, run), capfd), mentions=run)
    _unchanged(before, run)
    # continuing another run's checkpoint into it would mix the two as well
    line = assert_clean_error(in_process(_args(scene, run, "--resume", full / "checkpoint_epoch_2"), capfd),
                              mentions=run)
    assert "holds another run" in line
    _unchanged(before, run)
    # a second writer while one holds the folder
    lock = RunDirLock(run)
    lock.acquire()
    try:
        line = assert_clean_error(in_process(_args(scene, run, "--resume", epochs=6), capfd), mentions=run)
        assert "another train.py" in line
    finally:
        lock.release()
    _unchanged(before, run)
