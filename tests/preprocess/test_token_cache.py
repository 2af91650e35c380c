"""The safetensors token cache: bit-exact round trip, determinism, corruption and mismatch refusal; the int8
storage (per-token fp16 scales): error bound, byte determinism, one byte per value, refusals."""

from __future__ import annotations

import json

import pytest
import torch

import preprocess.token_cache as tc
from preprocess.crop import FramePreprocessor
from preprocess.token_cache import (
    META_KEY,
    TokenCache,
    TokenCacheError,
    canonical_json,
    check_frame_file,
    dequantize_int8,
    frame_meta_for,
    load_quantized_token_file,
    load_token_file,
    quantize_int8,
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


def _int8_tokens(seed: int = 0) -> list[torch.Tensor]:
    """float32 (P, D) tokens per layer with row magnitudes from 1e-9 to 1e4, a zero row and exact half steps."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in LAYERS:
        x = torch.randn(P, D, generator=g) * torch.logspace(-9, 4, P)[:, None]
        x[3] = 0
        step = torch.tensor(0.1).half().float()  # row 4: scale exactly 0.1 (fp16), values on half steps
        x[4] = (torch.arange(D) - D // 2 + 0.5) * step
        x[4, 0] = 127 * step
        out.append(x)
    return out


def _write_int8(path, toks, scene, key="000001", index=0):
    q, sc = zip(*(quantize_int8(t) for t in toks), strict=True)
    write_token_file(path, list(q), LAYERS, frame_meta_for(scene, key, index), scales=list(sc))
    return list(q), list(sc)


def test_int8_round_trip_error_bound_and_float_reads(tmp_path):
    toks = _int8_tokens()
    d = tmp_path / "tokens"
    scene = _scene_meta(["000001"], dtype="int8")
    write_scene_meta(d, scene)
    q, sc = _write_int8(d / "000001.safetensors", toks, scene)
    cache = TokenCache(d)
    assert cache.meta["version"] == 2 and cache.meta["dtype"] == "int8"
    cache.validate(layers=LAYERS, token_dim=D, deep=True)
    got = cache.load("000001", verify=True)
    assert [t.dtype for t in got] == [torch.float32] * len(LAYERS) and got[0].shape == (P, D)
    for x, y, qq, s in zip(toks, got, q, sc, strict=True):
        assert qq.dtype == torch.int8 and int(qq.abs().max()) <= 127 and s.dtype == torch.float16
        assert torch.equal(y, dequantize_int8(qq, s))
        err = (x.double() - y.double()).abs()
        assert bool((err <= s.double()[:, None] / 2).all())  # |x - dequant(q)| <= scale / 2, every element
        assert float(s[3]) == 0 and not y[3].any()  # a zero row stays exactly zero
        assert bool((s.double() >= x.abs().amax(1).double() / 127).all())  # scales rounded up: nothing clipped
    half = cache.load("000001", dtype=torch.float16)
    assert half[0].dtype == torch.float16 and torch.equal(half[1], got[1].half())
    # the stored bytes, memory-mapped
    q2, sc2, meta = load_quantized_token_file(d / "000001.safetensors", verify=True)
    assert all(torch.equal(a, b) for a, b in zip(q2 + sc2, q + sc, strict=True)) and meta["dtype"] == "int8"
    assert "symmetric-per-token" in meta["quantization"]


def test_int8_files_are_deterministic_one_byte_per_value(tmp_path):
    toks = _int8_tokens()
    scene = _scene_meta(["000001"], dtype="int8")
    _write_int8(tmp_path / "x.safetensors", toks, scene)
    _write_int8(tmp_path / "y.safetensors", [t.clone() for t in toks], scene)
    raw = (tmp_path / "x.safetensors").read_bytes()
    assert raw == (tmp_path / "y.safetensors").read_bytes()
    meta, header, start = read_token_header(tmp_path / "x.safetensors")
    assert raw.count(META_KEY.encode()) == 1 and json.loads(raw[8:start])["__metadata__"].keys() == {META_KEY}
    # one (P, D) entry per layer, as for float files (the scales are listed under their layer)
    assert set(header) == {f"layer_{li:02d}" for li in LAYERS} and {tuple(t["shape"]) for t in header.values()} \
        == {(P, D)}
    for q in header.values():
        s = q["scale"]
        assert q["dtype"] == "I8" and q["data_offsets"][1] - q["data_offsets"][0] == P * D  # 1 byte per value
        assert s["dtype"] == "F16" and s["data_offsets"][1] - s["data_offsets"][0] == 2 * P  # 2 bytes per row
    assert len(raw) == start + len(LAYERS) * (P * D + 2 * P)
    assert set(json.loads(raw[8:start])) == {"__metadata__"} | set(header) | {f"scale_{li:02d}" for li in LAYERS}
    # the fp16 file of the same tokens holds 2 bytes per value
    write_token_file(tmp_path / "h.safetensors", [t.half() for t in toks], LAYERS,
                     frame_meta_for(_scene_meta(["000001"]), "000001", 0))
    assert read_token_header(tmp_path / "h.safetensors")[0]["version"] == 1


def test_int8_refusals(tmp_path, monkeypatch):
    toks = _int8_tokens()
    scene = _scene_meta(["000001", "000002"], dtype="int8")
    d = tmp_path / "tokens"
    write_scene_meta(d, scene)
    q, sc = _write_int8(d / "000001.safetensors", toks, scene)
    cache = TokenCache(d)
    # writer: int8 needs its scales, floats take none; quantising NaN or out-of-range values is refused
    with pytest.raises(ValueError, match="int8 tokens need one"):
        write_token_file(tmp_path / "a.safetensors", q, LAYERS, {})
    with pytest.raises(ValueError, match="only stored with int8"):
        write_token_file(tmp_path / "a.safetensors", [t.half() for t in toks], LAYERS, {}, scales=sc)
    with pytest.raises(FloatingPointError, match="NaN"):
        quantize_int8(torch.full((2, 3), float("nan")))
    with pytest.raises(FloatingPointError, match="fp16 scale range"):
        quantize_int8(torch.full((2, 3), 1e8))
    assert not (tmp_path / "a.safetensors").exists()
    # readers: integer output, or the raw int8 reader on a float file
    with pytest.raises(ValueError, match="floating-point"):
        cache.load("000001", dtype=torch.int8)
    write_token_file(tmp_path / "h.safetensors", [t.half() for t in toks], LAYERS, {})
    with pytest.raises(TokenCacheError, match=r"h\.safetensors: stored as fp16, not int8"):
        load_quantized_token_file(tmp_path / "h.safetensors")
    # a reader from before int8 (reads version 1 only) refuses the folder and the file by version
    monkeypatch.setattr(tc, "READ_VERSIONS", (1,))
    with pytest.raises(TokenCacheError, match=r"meta\.json: .*version 2, expected .*version 1"):
        TokenCache(d)
    with pytest.raises(TokenCacheError, match=r"000001\.safetensors: token format version 2 but this code reads "
                                              r"version\(s\) 1"):
        load_token_file(d / "000001.safetensors")
    monkeypatch.undo()
    # hand-made inconsistent files are refused by name: no scales, int8 under a float label, wrong version
    from safetensors.torch import save_file

    def forge(name, tensors, **meta):
        full = {**frame_meta_for(scene, "000002", 1), "format": tc.FORMAT, "version": 2, "layers": LAYERS,
                "dtype": "int8", "num_tokens": P, "token_dim": D, "sha256": "", **meta}
        save_file(tensors, str(d / name), metadata={META_KEY: canonical_json(full)})
        return d / name

    layers_only = {f"layer_{li:02d}": t for li, t in zip(LAYERS, q, strict=True)}
    scales = {f"scale_{li:02d}": s for li, s in zip(LAYERS, sc, strict=True)}
    with pytest.raises(TokenCacheError, match=r"000002\.safetensors: tensors .* do not match .* storage 'int8'"):
        load_token_file(forge("000002.safetensors", layers_only))
    with pytest.raises(TokenCacheError, match="int8 tensors in a file whose metadata says 'fp16'"):
        load_token_file(forge("000002.safetensors", layers_only, dtype="fp16", version=1))
    with pytest.raises(TokenCacheError, match="format version 1 does not go with storage dtype 'int8'"):
        load_token_file(forge("000002.safetensors", {**layers_only, **scales}, version=1))
    wrong = {**layers_only, **scales, "scale_00": sc[0].float()}
    with pytest.raises(TokenCacheError, match=r"int8 file with tensors layer_00 I8 .* scale_00 F32"):
        load_token_file(forge("000002.safetensors", wrong))
    # an fp16 frame in an int8 folder is a mixed run
    write_token_file(d / "000002.safetensors", [t.half() for t in toks], LAYERS, frame_meta_for(
        {**scene, "dtype": "fp16"}, "000002", 1))
    with pytest.raises(TokenCacheError, match="dtype is 'fp16' but 'int8'"):
        cache.load("000002")
