"""The safetensors token cache: bit-exact round trip, determinism, corruption and mismatch refusal."""

from __future__ import annotations

import json

import pytest
import torch

from preprocess.frames import FramePreprocessor
from preprocess.token_cache import (
    META_KEY,
    TokenCache,
    TokenCacheError,
    check_frame_file,
    frame_meta_for,
    load_token_file,
    read_token_header,
    write_scene_meta,
    write_token_file,
)

LAYERS = [0, 1, 2, 3]
P, D = 5 + 2 * 4, 16


def _scene_meta(keys, dtype="fp16", layers=LAYERS):
    return {
        "backbone": "tiny-random-seed0", "layers": list(layers), "embed_dim": D // 2, "token_dim": D,
        "num_tokens": P, "grid": [2, 4], "patch_start_idx": 5, "patch_size": 14, "dtype": dtype,
        "compute_dtype": "fp32", "crop": FramePreprocessor(56, "crop").plan((30, 60)).to_dict(), "window": 4,
        "chunk_size": 2, "frames": [{"key": k, "index": i} for i, k in enumerate(keys)], "complete": True,
    }


def _make_cache(tmp_path, n=3, dtype=torch.float16, layers=LAYERS):
    d = tmp_path / "tokens"
    keys = [f"{i + 1:06d}" for i in range(n)]
    scene = _scene_meta(keys, {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype], layers)
    write_scene_meta(d, scene)
    g = torch.Generator().manual_seed(0)
    data = {}
    for i, k in enumerate(keys):
        toks = [(torch.randn(P, D, generator=g) * 30).to(dtype) for _ in layers]
        write_token_file(d / f"{k}.safetensors", toks, layers, frame_meta_for(scene, k, i))
        data[k] = toks
    return d, data


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_round_trip_is_bit_exact_and_memory_mapped(tmp_path, dtype):
    d, data = _make_cache(tmp_path, dtype=dtype)
    cache = TokenCache(d)
    assert cache.keys == ["000001", "000002", "000003"] and cache.layers == LAYERS and cache.grid == (2, 4)
    cache.validate(backbone="tiny-random-seed0", layers=LAYERS, token_dim=D, grid=(2, 4), patch_start_idx=5,
                   deep=True)
    for k, toks in data.items():
        got = cache.load(k, verify=True)
        assert len(got) == len(LAYERS)
        for a, b in zip(got, toks, strict=True):
            assert a.dtype == dtype and a.shape == (P, D)
            assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))  # bit-exact, NaN-safe
    # the tensors are copy-on-write views of a file mapping: writing to them never touches the file
    t = cache.load("000001")[0]
    before = (d / "000001.safetensors").read_bytes()
    t.zero_()
    assert (d / "000001.safetensors").read_bytes() == before
    assert torch.equal(cache.load("000001")[0].view(torch.uint8), data["000001"][0].view(torch.uint8))


def test_files_are_deterministic_and_metadata_is_one_canonical_json(tmp_path):
    toks = [torch.arange(P * D, dtype=torch.float32).reshape(P, D).half() for _ in LAYERS]
    scene = _scene_meta(["a"])
    write_token_file(tmp_path / "x.safetensors", toks, LAYERS, frame_meta_for(scene, "a", 0))
    write_token_file(tmp_path / "y.safetensors", toks, LAYERS, frame_meta_for(scene, "a", 0))
    assert (tmp_path / "x.safetensors").read_bytes() == (tmp_path / "y.safetensors").read_bytes()
    meta, header, _ = read_token_header(tmp_path / "x.safetensors")
    assert set(header) == {"layer_00", "layer_01", "layer_02", "layer_03"}
    assert meta["frame_key"] == "a" and meta["dtype"] == "fp16" and len(meta["sha256"]) == 64
    raw = (tmp_path / "x.safetensors").read_bytes()
    assert META_KEY.encode() in raw and b"time" not in raw
    # the file is plain safetensors: the reference reader loads it too
    from safetensors.torch import load_file
    assert torch.equal(load_file(str(tmp_path / "x.safetensors"))["layer_02"], toks[2])


def test_truncated_or_corrupted_files_name_the_file(tmp_path):
    d, _ = _make_cache(tmp_path)
    cache = TokenCache(d)
    f1, f2, f3 = (cache.path(k) for k in cache.keys)
    raw = f1.read_bytes()
    f1.write_bytes(raw[:-10])  # truncated data
    with pytest.raises(TokenCacheError, match=r"000001\.safetensors: truncated"):
        cache.load("000001")
    f2.write_bytes(raw[:5])  # truncated inside the length prefix
    with pytest.raises(TokenCacheError, match=r"000002\.safetensors: truncated"):
        cache.load("000002")
    raw3 = bytearray(f3.read_bytes())
    raw3[-3] ^= 0xFF  # bit flip in the tensor data: only the checksum can tell
    f3.write_bytes(bytes(raw3))
    cache.load("000003")  # header-only checks pass
    with pytest.raises(TokenCacheError, match=r"000003\.safetensors: checksum mismatch"):
        cache.load("000003", verify=True)
    raw3[20:30] = b"#" * 10  # garbage in the JSON header
    f3.write_bytes(bytes(raw3))
    with pytest.raises(TokenCacheError, match=r"000003\.safetensors: corrupted header"):
        cache.load("000003")
    assert check_frame_file(f3, cache.meta, "000003", 2) is not None
    with pytest.raises(TokenCacheError, match=r"000001\.safetensors"):
        cache.validate()
    f1.unlink()
    with pytest.raises(TokenCacheError, match=r"000001\.safetensors: token file missing"):
        cache.load("000001")


def test_metadata_mismatch_is_refused_with_the_fix(tmp_path):
    d, _ = _make_cache(tmp_path)
    cache = TokenCache(d)
    with pytest.raises(TokenCacheError, match=r"meta\.json.*layers is \[0, 1, 2, 3\] but \[4, 11, 17, 23\]"
                                              r".*--overwrite.*--layers 4 11 17 23"):
        cache.validate(layers=(4, 11, 17, 23))
    with pytest.raises(TokenCacheError, match="backbone is 'tiny-random-seed0'"):
        cache.validate(backbone="streamvggt-sha256-0123")
    with pytest.raises(TokenCacheError, match="grid"):
        cache.validate(grid=(21, 37))
    # a frame file from another run (different window) in the same folder is refused by name
    other = dict(cache.meta, window=8)
    toks = [torch.zeros(P, D, dtype=torch.float16) for _ in LAYERS]
    write_token_file(cache.path("000002"), toks, LAYERS, frame_meta_for(other, "000002", 1))
    with pytest.raises(TokenCacheError, match=r"000002\.safetensors: does not match .*window is 8 but 4"):
        cache.load("000002")
    assert "window" in check_frame_file(cache.path("000002"), cache.meta, "000002", 1)
    unbounded = dict(cache.meta, window=None)  # None (unbounded window) is a value, not "unchecked"
    write_token_file(cache.path("000003"), toks, LAYERS, frame_meta_for(unbounded, "000003", 2))
    assert "window is None but 4" in check_frame_file(cache.path("000003"), cache.meta, "000003", 2)
    assert check_frame_file(cache.path("000001"), cache.meta, "000001", 0) is None
    assert "frame_index" in check_frame_file(cache.path("000001"), cache.meta, "000001", 1)


def test_incomplete_or_foreign_folders_are_refused(tmp_path):
    d, _ = _make_cache(tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    meta["complete"] = False
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(TokenCacheError, match="did not finish"):
        TokenCache(d).validate()
    TokenCache(d).validate(keys=["000001"])  # the frames that exist can still be used explicitly
    with pytest.raises(TokenCacheError, match="meta.json: missing"):
        TokenCache(tmp_path / "nowhere")
    (d / "meta.json").write_text("{not json")
    with pytest.raises(TokenCacheError, match="meta.json: corrupted"):
        TokenCache(d)


def test_load_token_file_without_mmap_and_shape_checks(tmp_path):
    toks = [torch.randn(P, D).to(torch.bfloat16) for _ in range(2)]
    write_token_file(tmp_path / "f.safetensors", toks, [4, 11], {"frame_key": "f"})
    got, meta = load_token_file(tmp_path / "f.safetensors", mmap=False, verify=True)
    assert meta["layers"] == [4, 11] and all(torch.equal(a, b) for a, b in zip(got, toks, strict=True))
    with pytest.raises(ValueError, match="3 token tensors for 2 layers"):
        write_token_file(tmp_path / "g.safetensors", toks + toks[:1], [4, 11], {})
    assert not (tmp_path / "g.safetensors").exists()
