"""Token extraction with a windowed backbone (VGGT / PAGE-4D): tokens are those of the overlapping windows,
resume is byte-identical, the cache records the family, and bad weight files end in one line on the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import preprocess.extract_tokens as ex
from model.backbones import load_backbone
from model.vggt.windows import WindowedRunner
from preprocess.crop import FramePreprocessor
from preprocess.frames import list_frames, read_frame
from preprocess.token_cache import TokenCache
from tests.preprocess.test_extract_tokens import _files, _frames, _write_scene
from tests.reliability.conftest import assert_clean_error, run_module

SETTINGS = dict(target_width=56, window=3, overlap=1, progress=False)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return _write_scene(tmp_path_factory.mktemp("scene") / "toy", _frames(6))


@pytest.fixture(scope="module")
def backbone():
    return ex.load_aggregator("page4d-mask:tiny:0")


def test_tokens_are_the_overlapping_windows_and_meta_names_the_family(backbone, scene, tmp_path):
    frames = list_frames(scene)
    rep = ex.extract_tokens(backbone, frames, tmp_path / "t",
                            ex.ExtractionSettings(dtype="fp32", **SETTINGS))
    assert rep.written == 6
    cache = TokenCache(tmp_path / "t")
    assert cache.meta["backbone"] == "page4d-mask-tiny-random-seed0"
    assert cache.meta["backbone_info"]["family"] == "page4d-mask" and not cache.meta["backbone_info"]["streaming"]
    assert cache.meta["window"] == 3 and cache.meta["chunk_size"] == 2  # 2 new frames per window of 3
    prep = FramePreprocessor(56, "resize")
    images = torch.stack([prep.prepare(read_frame(f))[0] for f in frames])
    model = load_backbone("page4d-mask:tiny:0")[0]
    runner = WindowedRunner(model, 3, 1, layers=cache.layers, heads=())
    expected = [runner.step(images[i:i + 2])["tokens"] for i in range(0, 6, 2)]
    for i, f in enumerate(frames):
        got = cache.load(f.key)
        for j, layer in enumerate(cache.layers):
            assert torch.equal(got[j], expected[i // 2][layer][i % 2]), (f.key, layer)


def test_resume_after_a_lost_frame_is_byte_identical(backbone, scene, tmp_path):
    frames = list_frames(scene)
    s = ex.ExtractionSettings(**SETTINGS)
    ex.extract_tokens(backbone, frames, tmp_path / "t", s)
    before = _files(tmp_path / "t")
    (tmp_path / "t" / f"{frames[4].key}.safetensors").unlink()
    rep = ex.extract_tokens(backbone, frames, tmp_path / "t", s)
    assert rep.written == 1 and rep.replayed == 3  # the window before (its overlap frame) + valid frame 5
    assert _files(tmp_path / "t") == before


def test_a_windowed_backbone_needs_a_window(backbone, scene, tmp_path):
    with pytest.raises(ex.UserError, match="--window"):
        ex.extract_tokens(backbone, list_frames(scene), tmp_path / "t",
                          ex.ExtractionSettings(target_width=56, window=None, progress=False))


def _bad_files(tmp: Path) -> dict[str, Path]:
    import types

    sd = load_backbone("page4d:tiny:0")[0].state_dict()
    files = {}
    extra = dict(sd, **{"aggregator.extra.weight": torch.zeros(2)})
    torch.save({"model": extra}, files.setdefault("extra", tmp / "extra.pt"))
    missing = {k: v for k, v in sd.items() if k != "aggregator.frame_blocks.0.norm1.weight"}
    torch.save({"model": missing}, files.setdefault("missing", tmp / "missing.pt"))
    torch.save({"model": sd, "args": types.SimpleNamespace(a=1)}, files.setdefault("pickled", tmp / "pickled.pt"))
    return files


@pytest.mark.parametrize("kind", ["extra", "missing", "pickled"])
def test_bad_weight_files_end_in_one_line_exit_2(scene, tmp_path, kind):
    path = _bad_files(tmp_path)[kind]
    r = run_module("preprocess.extract_tokens", scene, "--backbone", f"page4d:{path}", "--out", tmp_path / "t",
                   "--no-progress")
    line = assert_clean_error(r, mentions=path)
    assert {"extra": "unexpected", "missing": "missing", "pickled": "refused"}[kind] in line
    assert not (tmp_path / "t").exists()
