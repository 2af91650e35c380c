"""open_clip wrapper: tiny random model, tokenizer offline, batching, unit norm, local weights, offline message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import clip as clip_mod
from model.clip import ClipEncoder


@pytest.fixture(scope="module")
def enc() -> ClipEncoder:
    return ClipEncoder.tiny(seed=0)


def test_tiny_text_shapes_norm_and_determinism(enc):
    texts = ["a red ball", "cup handle", "table", "a red ball"]
    e = enc.encode_text(texts)
    assert e.shape == (4, enc.embed_dim) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(e[0], e[3])  # same text, same row
    assert not torch.allclose(e[0], e[1], atol=1e-3)  # the real tokenizer distinguishes texts
    # same seed -> same weights; another seed -> different embeddings
    assert torch.allclose(ClipEncoder.tiny(seed=0).encode_text(texts[:1]), e[:1], atol=1e-6)
    assert not torch.allclose(ClipEncoder.tiny(seed=1).encode_text(texts[:1]), e[:1], atol=1e-3)
    # batching does not change results
    assert torch.allclose(enc.encode_text(texts, batch_size=1), e, atol=1e-5)
    assert enc.encode_text([]).shape == (0, enc.embed_dim)


def test_tiny_image_batched_uint8_and_float_agree(enc):
    s = enc.image_size
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, size=(5, s, s, 3), dtype=np.uint8)
    a = enc.encode_image(u8, batch_size=2)
    b = enc.encode_image(torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0, batch_size=5)
    assert a.shape == (5, enc.embed_dim)
    assert torch.allclose(a.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match=str(s)):
        enc.encode_image(torch.rand(2, 3, s // 2, s // 2))


def test_local_weights_file_roundtrip(enc, tmp_path):
    path = tmp_path / "tiny.safetensors"
    enc.save_weights(path)
    other = ClipEncoder.from_pretrained("tiny", path)
    assert torch.allclose(other.encode_text(["red ball"]), enc.encode_text(["red ball"]), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClipEncoder.from_pretrained("ViT-B-16", tmp_path / "missing.safetensors")


def test_offline_message_names_the_file(monkeypatch, tmp_path):
    """Offline: one sentence naming the file to put where, the local-file flag and the weight-free option; when the
    Hub cannot be reached nothing is attempted (no minute of retries)."""
    import time

    import open_clip

    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise OSError("We couldn't connect to 'https://huggingface.co' and the file is not cached")

    monkeypatch.setattr(clip_mod, "LOCAL_CKPT_DIR", tmp_path / "ckpt" / "open_clip")
    monkeypatch.setattr(open_clip, "create_model", offline)
    monkeypatch.setattr(clip_mod, "_cached", lambda repo: False)
    # no retries: a wait anywhere on the way (a retry loop's back-off) fails the test, on any machine's speed
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail(f"waited {s} s before failing: a retry loop"))
    for reachable in (True, False):  # the download fails / the Hub is out of reach
        monkeypatch.setattr(clip_mod, "hub_reachable", lambda reachable=reachable: reachable)
        with pytest.raises(FileNotFoundError) as info:
            ClipEncoder.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")
        msg = str(info.value)
        assert "ckpt/open_clip/ViT-B-16_laion2b_s34b_b88k.bin" in msg and "\n" not in msg
        assert "laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in msg and "--clip-weights" in msg and "--hash-text" in msg
    assert len(calls) == 1  # only the reachable case tried to download


def test_hub_offline_is_honoured(monkeypatch):
    from model import hub

    hub.hub_reachable.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        assert hub.hub_reachable() is False
    finally:
        hub.hub_reachable.cache_clear()


def test_local_candidate_is_preferred(monkeypatch, tmp_path):
    """A file under ckpt/open_clip/ named <model>_<tag> is read (by our safe reader) instead of any download."""
    import open_clip

    d = tmp_path / "open_clip"
    d.mkdir()
    (d / "ViT-B-16_laion2b_s34b_b88k.safetensors").write_bytes(b"x")
    monkeypatch.setattr(clip_mod, "LOCAL_CKPT_DIR", d)
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: pytest.fail("a download was attempted")
                        if k.get("pretrained") else torch.nn.Linear(1, 1))
    with pytest.raises(Exception, match="ViT-B-16_laion2b_s34b_b88k.safetensors"):
        ClipEncoder.from_pretrained("ViT-B-16", "laion2b_s34b_b88k")
