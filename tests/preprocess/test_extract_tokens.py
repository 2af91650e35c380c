"""Token extraction: streaming equals batch, crash + resume is byte-identical (fp16 and int8), mismatches refused,
mp4 == PNG."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import preprocess.extract_tokens as ex
from preprocess.crop import FramePreprocessor
from preprocess.frames import list_frames
from preprocess.token_cache import TokenCache, TokenCacheError

W, H = 84, 50  # -> crop to 56 x 28 (2 x 4 patches)


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth moving patterns (codec-friendly), RGB uint8 (H, W, 3)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = []
    for i in range(n):
        r = 127 + 90 * np.sin((xx + 4 * i + seed) / 11.0)
        g = 127 + 90 * np.cos(yy / 8.0 + 0.3 * i)
        b = 127 + 60 * np.sin((xx + yy) / 15.0 - 0.2 * i)
        out.append(np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8))
    return out


def _write_scene(root: Path, frames: list[np.ndarray]) -> Path:
    d = root / "rgb" / "2x"
    d.mkdir(parents=True)
    for i, rgb in enumerate(frames):
        assert cv2.imwrite(str(d / f"{i + 1:06d}.png"), rgb[:, :, ::-1])
    return root


@pytest.fixture(scope="module")
def backbone():
    return ex.load_aggregator("tiny", seed=0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return _write_scene(tmp_path_factory.mktemp("scene") / "toy", _frames(7))


SETTINGS = dict(target_width=56, chunk_size=2, window=3, progress=False)


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if not p.name.startswith(".")}


def test_streamed_tokens_match_batch_and_metadata(backbone, scene, tmp_path):
    frames = list_frames(scene)
    rep = ex.extract_tokens(backbone, frames, tmp_path / "tokens", ex.ExtractionSettings(**SETTINGS))
    assert (rep.written, rep.skipped, rep.replayed) == (7, 0, 0)
    cache = TokenCache(tmp_path / "tokens")
    cache.validate(backbone="tiny-random-seed0", layers=(0, 1, 2, 3), token_dim=128, grid=(2, 4),
                   patch_start_idx=5, deep=True)
    assert cache.keys == [f"{i:06d}" for i in range(1, 8)] and cache.complete
    assert cache.crop["input_hw"] == [28, 56] and cache.crop["orig_hw"] == [H, W]
    assert cache.meta["backbone_info"]["kind"] == "tiny-random" and cache.meta["window"] == 3
    fm = cache.frame_meta("000003")
    assert fm["frame_index"] == 2 and fm["history"] == "full" and fm["dtype"] == "fp16"
    # chunked streaming with a window == one batched windowed block-causal pass (fp16 storage tolerance)
    prep = FramePreprocessor(56, "crop")
    from preprocess.frames import read_frame
    imgs = torch.stack([prep.prepare(read_frame(f))[0] for f in frames])[None]
    with torch.no_grad():
        ref, psi = backbone.aggregator(imgs, None, window=3)
    assert psi == 5
    for i, key in enumerate(cache.keys):
        for li, tok in zip(cache.layers, cache.load(key), strict=True):
            assert tok.shape == (13, 128) and tok.dtype == torch.float16
            torch.testing.assert_close(tok.float(), ref[li][0, i], atol=2e-2, rtol=2e-3)


def test_crash_then_resume_gives_identical_files(backbone, scene, tmp_path, monkeypatch):
    frames = list_frames(scene)
    s = ex.ExtractionSettings(**SETTINGS)
    ex.extract_tokens(backbone, frames, tmp_path / "a", s)
    expected = _files(tmp_path / "a")

    real_write = ex.write_token_file
    calls = {"n": 0}

    def crashing_write(*args, **kwargs):
        if calls["n"] == 3:  # die after 3 frames, in the middle of chunk [2, 4)
            raise KeyboardInterrupt("simulated crash")
        calls["n"] += 1
        return real_write(*args, **kwargs)

    monkeypatch.setattr(ex, "write_token_file", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        ex.extract_tokens(backbone, frames, tmp_path / "b", s)
    monkeypatch.setattr(ex, "write_token_file", real_write)
    partial = _files(tmp_path / "b")
    assert sorted(partial) == ["000001.safetensors", "000002.safetensors", "000003.safetensors", "meta.json"]
    assert json.loads(partial["meta.json"])["complete"] is False
    with pytest.raises(TokenCacheError, match="did not finish"):
        TokenCache(tmp_path / "b").validate()

    rep = ex.extract_tokens(backbone, frames, tmp_path / "b", s)
    assert (rep.written, rep.replayed) == (4, 3)  # frames 0-2 replayed through the backbone, not rewritten
    assert _files(tmp_path / "b") == expected  # byte-identical, meta.json included

    # a damaged file in the middle is detected and only it is rewritten, again identically
    f = tmp_path / "b" / "000005.safetensors"
    f.write_bytes(f.read_bytes()[:-7])
    rep = ex.extract_tokens(backbone, frames, tmp_path / "b", s)
    assert rep.written == 1 and _files(tmp_path / "b") == expected
    rep = ex.extract_tokens(backbone, frames, tmp_path / "b", s)  # nothing left to do
    assert (rep.written, rep.skipped) == (0, 7)

    # windowed replay (faster, approximate): later frames are marked and close to the exact ones
    for k in ("000006", "000007"):
        (tmp_path / "b" / f"{k}.safetensors").unlink()
    s_win = ex.ExtractionSettings(**{**SETTINGS, "resume_replay": "window"})
    rep = ex.extract_tokens(backbone, frames, tmp_path / "b", s_win)
    assert (rep.written, rep.replayed) == (2, 3)  # replays frames 2..4 only: max(0, 5 - window 3) = 2
    cache_a, cache_b = TokenCache(tmp_path / "a"), TokenCache(tmp_path / "b")
    assert cache_b.frame_meta("000006")["history"] == "window"
    for k in ("000006", "000007"):
        for ta, tb in zip(cache_a.load(k), cache_b.load(k), strict=True):
            torch.testing.assert_close(ta.float(), tb.float(), atol=0.1, rtol=0.05)
    # a later exact (default) run does not trust the windowed frames: it rewrites them, byte-identically
    rep = ex.extract_tokens(backbone, frames, tmp_path / "b", s)
    assert rep.written == 2 and _files(tmp_path / "b") == expected


def test_int8_extraction_is_deterministic_resumable_and_read_as_floats(backbone, scene, tmp_path):
    frames = list_frames(scene)
    s = ex.ExtractionSettings(**{**SETTINGS, "dtype": "int8"})
    ex.extract_tokens(backbone, frames, tmp_path / "a", s)
    ex.extract_tokens(backbone, frames, tmp_path / "b", s)
    expected = _files(tmp_path / "a")
    assert _files(tmp_path / "b") == expected  # byte-identical across runs
    for k in ("000004", "000006"):  # resume: only the missing frames are rewritten, identically
        (tmp_path / "b" / f"{k}.safetensors").unlink()
    rep = ex.extract_tokens(backbone, frames, tmp_path / "b", s)
    assert rep.written == 2 and _files(tmp_path / "b") == expected
    cache = TokenCache(tmp_path / "a")
    cache.validate(layers=(0, 1, 2, 3), token_dim=128, deep=True)
    assert cache.meta["dtype"] == "int8" and cache.meta["version"] == 2
    raw = (tmp_path / "a" / "000001.safetensors").stat().st_size
    assert raw < 4 * 13 * 128 + 4 * 13 * 2 + 2000  # 1 byte per value + 2 per token row + the JSON header
    with pytest.raises(TokenCacheError, match=r"dtype is 'int8' but 'fp16'.*--overwrite"):
        ex.extract_tokens(backbone, frames, tmp_path / "a", ex.ExtractionSettings(**SETTINGS))
    # read back as float32, within half a quantisation step of the exact (batched) tokens
    prep = FramePreprocessor(56, "crop")
    from preprocess.frames import read_frame
    imgs = torch.stack([prep.prepare(read_frame(f))[0] for f in frames])[None]
    with torch.no_grad():
        ref, _ = backbone.aggregator(imgs, None, window=3)
    for i, key in enumerate(cache.keys):
        for li, tok in zip(cache.layers, cache.load(key), strict=True):
            x = ref[li][0, i]
            assert tok.dtype == torch.float32 and tok.shape == (13, 128)
            step = x.abs().amax(1, keepdim=True) / 127
            assert bool(((tok - x).abs() <= step * 0.5 + 1e-4).all())


def test_settings_mismatch_is_refused_unless_overwrite(backbone, scene, tmp_path):
    frames = list_frames(scene)[:3]
    ex.extract_tokens(backbone, frames, tmp_path / "t", ex.ExtractionSettings(**SETTINGS))
    other = ex.ExtractionSettings(**{**SETTINGS, "window": 8, "layers": (1, 3)})
    with pytest.raises(TokenCacheError, match=r"meta\.json: .*layers is \[0, 1, 2, 3\] but \[1, 3\].*--overwrite"):
        ex.extract_tokens(backbone, frames, tmp_path / "t", other)
    rep = ex.extract_tokens(backbone, frames, tmp_path / "t", ex.ExtractionSettings(**{**SETTINGS, "window": 8,
                                                                                          "layers": (1, 3),
                                                                                          "overwrite": True}))
    assert rep.written == 3 and TokenCache(tmp_path / "t").layers == [1, 3]
    with pytest.raises(ValueError, match="within 0..3"):
        ex.extract_tokens(backbone, frames, tmp_path / "u", ex.ExtractionSettings(**{**SETTINGS, "layers": (4,)}))


def test_frames_of_another_size_are_named(backbone, tmp_path):
    scene = _write_scene(tmp_path / "s", _frames(3))
    cv2.imwrite(str(scene / "rgb" / "2x" / "000002.png"), np.zeros((40, 84, 3), np.uint8))
    with pytest.raises(ValueError, match=r"000002\.png.*same size"):
        ex.extract_tokens(backbone, list_frames(scene), tmp_path / "tok", ex.ExtractionSettings(**SETTINGS))


def test_mp4_and_png_give_the_same_tokens_within_codec_tolerance(backbone, scene, tmp_path):
    """Measured on these small 84x50 frames: mp4v changes pixels by 3.4/255 on average (MJPG: 2.7/255) and the
    stored tokens (tiny random backbone, all layers) by a relative L2 error of 0.054 (max abs 0.10); tokens of
    unrelated frames differ by 1.19 relative. Tolerance: relative L2 < 0.08 and < 1/10 of the unrelated gap."""
    video = tmp_path / "toy.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (W, H))
    assert writer.isOpened(), "mp4v is not available in this OpenCV build"
    for rgb in _frames(7):
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()
    jobs = ex.discover_jobs(video)
    assert jobs[0].tokens_dir == tmp_path / "toy" / "tokens"
    s = ex.ExtractionSettings(**SETTINGS)
    ex.extract_tokens(backbone, list_frames(video), jobs[0].tokens_dir, s)
    ex.extract_tokens(backbone, list_frames(scene), tmp_path / "png", s)
    ex.extract_tokens(backbone, list_frames(_write_scene(tmp_path / "other", _frames(7, seed=40))),
                      tmp_path / "other_tok", s)
    vid, png, other = (TokenCache(d) for d in (jobs[0].tokens_dir, tmp_path / "png", tmp_path / "other_tok"))
    assert vid.keys == png.keys == [f"{i:06d}" for i in range(1, 8)]

    def rel(a: TokenCache, b: TokenCache) -> float:
        num = sum(float((x.float() - y.float()).norm() ** 2) for k in a.keys for x, y in zip(a.load(k), b.load(k), strict=True))
        den = sum(float(y.float().norm() ** 2) for k in b.keys for y in b.load(k))
        return (num / den) ** 0.5

    err, baseline = rel(vid, png), rel(other, png)
    assert err < 0.08, err
    assert baseline > 10 * err, (baseline, err)


def test_job_discovery_layouts(tmp_path):
    img = np.zeros((20, 30, 3), np.uint8)
    for cam in ("cam00", "cam01"):
        (tmp_path / "neu3d" / "coffee" / cam / "images").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "neu3d" / "coffee" / cam / "images" / "0000.png"), img)
    _write_scene(tmp_path / "hyper" / "americano", [img])
    _write_scene(tmp_path / "hyper" / "split-cookie", [img])
    jobs = ex.discover_jobs(tmp_path / "neu3d" / "coffee", cameras=["cam00"])
    assert [(j.name, j.tokens_dir) for j in jobs] == [("coffee/cam00", tmp_path / "neu3d/coffee/cam00/tokens")]
    assert len(ex.discover_jobs(tmp_path / "neu3d")) == 2
    assert ex.discover_jobs(tmp_path / "neu3d/coffee/cam01/images")[0].tokens_dir == \
        tmp_path / "neu3d/coffee/cam01/tokens"
    jobs = ex.discover_jobs(tmp_path / "hyper", scenes=["split-cookie"])
    assert [j.tokens_dir for j in jobs] == [tmp_path / "hyper/split-cookie/tokens"]
    assert ex.discover_jobs(tmp_path / "hyper/americano/rgb/2x")[0].tokens_dir == tmp_path / "hyper/americano/tokens"
    with pytest.raises(FileNotFoundError, match="nope"):
        ex.discover_jobs(tmp_path / "hyper", scenes=["nope"])
    with pytest.raises(ValueError, match="--out needs a single video"):
        ex.discover_jobs(tmp_path / "hyper", out=tmp_path / "x")


def test_cli_help_tiny_run_and_no_silent_fallback(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        ex.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--checkpoint", "--device", "--dtype", "--chunk-size", "--window", "--layers", "--target-width",
                 "--mode", "--overwrite", "--resume-replay", "--backbone", "--scenes", "--cameras"):
        assert flag in text
    scene = _write_scene(tmp_path / "toy", _frames(2))
    assert ex.main([str(scene), "--backbone", "tiny", "--target-width", "56", "--device", "cpu",
                    "--window", "none", "--dtype", "bf16", "--no-progress"]) == 0
    assert "tiny-random-seed0" in capsys.readouterr().out
    cache = TokenCache(scene / "tokens")
    assert cache.meta["dtype"] == "bf16" and cache.meta["window"] is None and cache.load("000002")[0].dtype == \
        torch.bfloat16
    # official backbone without weights: an error with the instruction, never random weights
    from model.streamvggt.loading import WeightsNotFoundError
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsNotFoundError, match="checkpoints.pth"):
        ex.load_aggregator("streamvggt", checkpoint=str(tmp_path / "missing.pth"))


def test_checkpoint_hash_is_cached_and_refreshed(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"abc")
    import hashlib
    assert ex.checkpoint_sha256(f) == hashlib.sha256(b"abc").hexdigest()
    side = tmp_path / "w.pth.sha256.json"
    assert json.loads(side.read_text())["size"] == 3
    stamp = json.loads(side.read_text())
    side.write_text(json.dumps({**stamp, "sha256": "cached"}))
    assert ex.checkpoint_sha256(f) == "cached"  # size + mtime unchanged: no re-hash
    f.write_bytes(b"abcd")
    assert ex.checkpoint_sha256(f) == hashlib.sha256(b"abcd").hexdigest()
