"""torchrun splits independent jobs across processes: 2 processes write exactly the bytes 1 process writes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S
from tests.reliability.conftest import frames, tree_bytes
from utils.ranks import my_share, rank_and_world


def test_my_share_round_robin(monkeypatch):
    jobs = list("abcde")
    assert my_share(jobs) == jobs and rank_and_world() == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    shares = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        shares.append(my_share(jobs))
    assert shares == [["a", "c", "e"], ["b", "d"]]
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="inconsistent"):
        my_share(jobs)


def test_inference_over_a_dataset_root_two_processes_equal_one(tmp_path, decoder_file):
    root = tmp_path / "root"
    for i, name in enumerate(("alpha", "beta", "gamma")):
        frames(root / name / "rgb" / "2x", 3, seed=i)
    common = ["--source", str(root), "--decoder", str(decoder_file), "--device", "cpu", "--backbone", "tiny",
              "--no-pca", "-q", "--chunk", "3"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "inference.run", *common, "--out", str(tmp_path / "one")],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "inference.run", *common, "--out", str(tmp_path / "two")],
                         cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = tree_bytes(tmp_path / "one"), tree_bytes(tmp_path / "two")
    assert sorted({k.split("/")[0] for k in a}) == ["alpha", "beta", "gamma"]
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)][:5]


def test_token_extraction_over_a_two_scene_root_two_processes_equal_one(tmp_path):
    root = tmp_path / "root"
    for i, name in enumerate(("alpha", "beta")):
        frames(root / name / "rgb" / "2x", 4, seed=10 + i)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    common = ["--backbone", "tiny", "--target-width", "56", "--device", "cpu", "--no-progress"]
    import shutil

    one_root = tmp_path / "one"
    shutil.copytree(root, one_root)
    one = subprocess.run([sys.executable, "-m", "preprocess.extract_tokens", str(one_root), *common], cwd=REPO_ROOT,
                         env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert one.returncode == 0, one.stderr[-2000:]
    two_root = tmp_path / "two"
    shutil.copytree(root, two_root)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "preprocess.extract_tokens", str(two_root), *common], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = tree_bytes(one_root), tree_bytes(two_root)
    tokens = [k for k in a if "/tokens/" in k]
    assert len(tokens) >= 2 * 5  # 4 frames + meta.json per scene
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)][:5]


def test_semantics_takes_a_dataset_root_and_shares_its_scenes(tmp_path, monkeypatch):
    from preprocess.extract_semantics import expand_scene_args
    from utils.ranks import my_share

    for name in ("b", "a", "c"):
        frames(tmp_path / "root" / name / "rgb" / "2x", 1)
    (tmp_path / "root" / "notes").mkdir()
    scenes = expand_scene_args([str(tmp_path / "root")], None)
    assert [s.name for s in scenes] == ["a", "b", "c"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert [s.name for s in my_share(scenes)] == ["b"]
    with pytest.raises(FileNotFoundError, match="dataset root"):
        expand_scene_args([str(tmp_path / "root" / "notes")], None)
