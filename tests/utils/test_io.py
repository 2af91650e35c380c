"""Atomic writes: complete file or nothing, normal permissions, no pickle on read."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import REPO_ROOT
from utils.io import (
    atomic_path,
    load_npy,
    save_json_atomic,
    save_npy_atomic,
    save_npz_atomic,
    save_safetensors_atomic,
)


def test_atomic_path_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_json_atomic({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644


def test_round_trips_are_exact(tmp_path):
    t = {"w": torch.randn(3, 4, dtype=torch.float16), "i": torch.arange(5)}
    save_safetensors_atomic(t, tmp_path / "t.safetensors", metadata={"k": "v"})
    back = load_file(tmp_path / "t.safetensors")
    assert all(torch.equal(t[k], back[k]) for k in t)
    a = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    save_npy_atomic(a, tmp_path / "a.npy")
    assert np.array_equal(load_npy(tmp_path / "a.npy"), a)


def test_load_npy_refuses_object_arrays(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        load_npy(tmp_path / "o.npy")


def test_safetensors_with_several_metadata_keys_have_the_same_bytes_on_every_run(tmp_path):
    """The writer's metadata is a hash map (random order per process): our files are canonicalised."""
    import subprocess
    import sys

    code = ("import sys, torch; from utils.io import save_safetensors_atomic; "
            "save_safetensors_atomic({'b': torch.arange(3.0), 'a': torch.ones(2, dtype=torch.float16)}, sys.argv[1], "
            "metadata={k: '\\u00e9' + k * 3 for k in 'qwertyuiop'})")
    outs = []
    for i in range(3):  # separate processes: separate hash seeds
        path = tmp_path / f"f{i}.safetensors"
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=str(REPO_ROOT),
                       env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        outs.append(path.read_bytes())
    assert all(o == outs[0] for o in outs)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "f0.safetensors"), "pt") as f:
        assert f.metadata() == {k: "\u00e9" + k * 3 for k in "qwertyuiop"}
        assert f.get_tensor("b").tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("compress", [False, True])
def test_npz_writer_round_trips_keeps_scalars_and_gives_the_same_bytes(tmp_path, compress):
    arrays = {"b": np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2], "a": np.array(7), "k": np.array(["x", "yz"]),
              "m": np.zeros((40, 40), bool)}
    save_npz_atomic(arrays, tmp_path / "one.npz", compress=compress)
    save_npz_atomic(dict(reversed(arrays.items())), tmp_path / "two.npz", compress=compress)
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "two.npz").read_bytes()
    with np.load(tmp_path / "one.npz", allow_pickle=False) as back:
        assert sorted(back.files) == ["a", "b", "k", "m"]
        for k, v in arrays.items():
            assert back[k].shape == v.shape and back[k].dtype == v.dtype and np.array_equal(back[k], v)
    stored = (tmp_path / "one.npz").stat().st_size
    assert (stored < arrays["m"].nbytes) == compress  # 1,600 zero bytes deflate to a few dozen


def test_npz_writer_refuses_object_arrays_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        save_npz_atomic({"o": np.array([{"a": 1}], dtype=object)}, tmp_path / "o.npz")
    assert list(tmp_path.iterdir()) == []
