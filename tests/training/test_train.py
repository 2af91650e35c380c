"""End-to-end training on a tiny synthetic scene: the loss falls, resume is exact, DDP matches one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S
from tests.training.helpers import make_tiny_scene
from training.trainer import main


def _args(scene, out, *extra):
    return ["--scenes", str(scene), "--out", str(out), "--decoder", "tiny", "--no-progress", "--threads", "1",
            "--cache-in-memory", *map(str, extra)]


def test_feature_loss_falls_tenfold(tmp_path):
    scene = make_tiny_scene(tmp_path / "s", n_frames=4, grid=(2, 2), layout="uniform")
    s = main(_args(scene, tmp_path / "run", "--epochs", 200, "--batch-size", 4, "--lr", 5e-3, "--warmup-epochs", 0,
                   "--clip-grad", 0, "--weight-decay", 0, "--w-rgb", 0, "--train-on-eval-frames", "--no-val",
                   "--save-every", 1000, "--decoder-config", json.dumps({"frame_input": False})))
    first, last = s["history"][0]["train_lang"], s["history"][-1]["train_lang"]
    assert s["global_step"] == 200
    assert last < first / 10, (first, last)
    assert (tmp_path / "run" / "checkpoint_epoch_200" / "model.safetensors").is_file()


def _same_files(a: Path, b: Path, name: str) -> None:
    ta, tb = load_file(str(a / name)), load_file(str(b / name))
    assert set(ta) == set(tb)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{name}:{k} differs"


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_is_bit_exact(tmp_path, schedule):
    scene = make_tiny_scene(tmp_path / "s", n_frames=6, grid=(2, 2), video_dim=6)
    common = ["--batch-size", 2, "--lr", 1e-3, "--warmup-epochs", 1, "--schedule", schedule, "--save-every", 2]
    full = main(_args(scene, tmp_path / "full", "--epochs", 4, *common))
    if schedule == "constant":  # the plain user path: train 2 epochs, later ask for 4 and resume
        main(_args(scene, tmp_path / "part", "--epochs", 2, *common))
    else:  # the cosine horizon must be known up front: stop early, then resume
        main(_args(scene, tmp_path / "part", "--epochs", 4, "--stop-at-epoch", 2, *common))
    resumed = main(_args(scene, tmp_path / "part", "--epochs", 4, "--resume", *common))
    assert resumed["global_step"] == full["global_step"] == 8
    a, b = tmp_path / "full" / "checkpoint_epoch_4", tmp_path / "part" / "checkpoint_epoch_4"
    _same_files(a, b, "model.safetensors")
    _same_files(a, b, "optim.safetensors")
    assert [h["train_loss"] for h in full["history"]] == [h["train_loss"] for h in resumed["history"]]
    assert "val_loss" in full["history"][-1] and full["history"][-1]["val_count"] == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_error_of_one_rank_stops_all_with_one_line(tmp_path):
    """Rank 0 alone finds the run folder locked by another run: every rank exits with code 2, the error is printed
    once, and no rank is left at a barrier or dies on a closed connection (training.distributed.one_outcome)."""
    import fcntl

    scene = make_tiny_scene(tmp_path / "s", n_frames=6, grid=(2, 2))
    out = tmp_path / "ddp"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "another train.py" holds the run folder
    try:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
               "--monitor-interval", "3",  # (see the bad-tokens test below)
               str(REPO_ROOT / "train.py"), *_args(scene, out, "--batch-size", 1, "--epochs", 1)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=REPO_ROOT)
    finally:
        os.close(fd)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode != 0 and errors == [f"error: another train.py is writing to this run folder ({out}): "
                                               "wait for it to finish (or stop it), or pass another --out"], \
        proc.stderr[-3000:]
    assert "[rank1]" not in proc.stderr and "RuntimeError" not in proc.stderr, proc.stderr[-3000:]
    assert list(out.iterdir()) == []


def test_torchrun_bad_tokens_of_one_rank_stop_all_with_one_line(tmp_path):
    """A token file holding NaN (past the pre-flight, which reads headers only) is read by one rank mid-epoch: every
    rank stops before the backward pass (none is left in DDP's all-reduce), with one error line naming the file."""
    from preprocess.token_cache import load_token_file, write_token_file

    scene = make_tiny_scene(tmp_path / "s", n_frames=6, grid=(2, 2))
    bad = scene / "tokens" / "000001.safetensors"  # a training frame (2 and 5 are held out)
    tokens, meta = load_token_file(bad)
    tokens = [t.clone() for t in tokens]
    tokens[1][3, 0] = float("nan")
    write_token_file(bad, tokens, meta["layers"], meta)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    args = [a for a in _args(scene, tmp_path / "ddp", "--batch-size", 1, "--epochs", 1) if a != "--cache-in-memory"]
    # torchrun checks its workers every 3 s here (default 0.1 s), so a rank left behind would show its own failure
    # before the launcher ends it
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "--monitor-interval", "3", str(REPO_ROOT / "train.py"), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=REPO_ROOT)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr[-3000:]
    assert "NaN or inf in the cached tokens" in errors[0] and str(bad) in errors[0], errors
    assert "[rank" not in proc.stderr and "RuntimeError" not in proc.stderr, proc.stderr[-3000:]


def test_torchrun_two_processes_match_one_process(tmp_path):
    scene = make_tiny_scene(tmp_path / "s", n_frames=6, grid=(2, 2))
    # Summation order differs (gloo all-reduce of two half-batch gradients vs one batch): ~1e-7 relative
    # gradient differences, which Adam's g/sqrt(v) amplifies for near-zero gradients up to ~lr per step.
    # At lr 1e-3 one weight in 165k differed by 4e-5; at this lr every weight stays within 1e-5.
    common = ["--epochs", 2, "--lr", 2e-4, "--warmup-epochs", 1, "--save-every", 2, "--no-val"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(REPO_ROOT / "train.py"), *_args(scene, tmp_path / "ddp", "--batch-size", 1, *common)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = main(_args(scene, tmp_path / "one", "--batch-size", 2, *common))
    assert single["global_step"] == 4  # 4 training frames / global batch 2, x 2 epochs
    a = load_file(str(tmp_path / "ddp" / "checkpoint_epoch_2" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "checkpoint_epoch_2" / "model.safetensors"))
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=0), (k, (a[k] - b[k]).abs().max())
    ddp_hist = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [h["train_loss"] for h in ddp_hist] == pytest.approx([h["train_loss"] for h in single["history"]],
                                                                abs=1e-6)
