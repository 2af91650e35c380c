"""Weights loading: local .pth / {"model": sd} / .safetensors round trips, Hub path (monkeypatched), and the
one-sentence errors for a missing file, an offline Hub and mismatching keys."""

from __future__ import annotations

import pytest
import torch

from model.streamvggt import loading
from model.streamvggt.config import StreamVGGTConfig  # noqa: E402
from model.streamvggt.loading import WeightsNotFoundError, read_state_dict, resolve_checkpoint
from model.streamvggt.streamvggt import StreamVGGT  # noqa: E402

INSTRUCTION = ("download checkpoints.pth from https://huggingface.co/lch01/StreamVGGT and put it at "
               "ckpt/streamvggt/checkpoints.pth")


@pytest.fixture(scope="module")
def tiny():
    return StreamVGGT.tiny(seed=3)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("fmt", ["pth", "pth_model", "safetensors"])
def test_round_trip(tmp_path, tiny, fmt):
    sd = tiny.state_dict()
    if fmt == "safetensors":
        from utils.io import save_safetensors_atomic

        path = tmp_path / "model.safetensors"
        save_safetensors_atomic(sd, path)
    else:
        path = tmp_path / "checkpoints.pth"
        torch.save({"model": sd} if fmt == "pth_model" else sd, path)
    model = StreamVGGT.from_pretrained(path, config=StreamVGGTConfig.tiny())
    assert not model.training
    assert not any(t.is_meta for t in list(model.parameters()) + list(model.buffers()))
    assert_same_weights(model, tiny)
    imgs = torch.rand(1, 2, 3, 28, 42, generator=torch.Generator().manual_seed(0))
    a, b = model(imgs), tiny(imgs)
    for key in ("pose_enc", "depth", "world_points_conf"):
        assert torch.equal(a[key], b[key])
    # a folder holding the file works too
    assert resolve_checkpoint(tmp_path) == path


def test_missing_file_error(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        StreamVGGT.from_pretrained(tmp_path / "nope" / "checkpoints.pth", config=StreamVGGTConfig.tiny())
    msg = str(err.value)
    assert INSTRUCTION in msg and "nope" in msg and "\n" not in msg


def test_offline_hub_error(tmp_path, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr("model.hub.hub_reachable", lambda: True)  # the Hub answers, the file is not there
    monkeypatch.chdir(tmp_path)  # no ckpt/streamvggt/checkpoints.pth here
    for source in (None, "lch01/StreamVGGT"):
        with pytest.raises(WeightsNotFoundError) as err:
            resolve_checkpoint(source)
        assert INSTRUCTION in str(err.value) and "LocalEntryNotFoundError" in str(err.value)
    # no network at all: fails at once, without trying the download, and names the weight-free option
    monkeypatch.setattr("model.hub.hub_reachable", lambda: False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("download attempted"))
    with pytest.raises(WeightsNotFoundError, match="cannot be reached") as err:
        resolve_checkpoint(None)
    assert INSTRUCTION in str(err.value) and "--backbone tiny" in str(err.value)


def test_hub_download_and_default_local_path(tmp_path, monkeypatch, tiny):
    import huggingface_hub

    path = tmp_path / "hub" / "checkpoints.pth"
    path.parent.mkdir()
    torch.save(tiny.state_dict(), path)
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr("model.hub.hub_reachable", lambda: True)
    model = StreamVGGT.from_pretrained("lch01/StreamVGGT", config=StreamVGGTConfig.tiny())
    assert calls == [("lch01/StreamVGGT", "checkpoints.pth")]
    assert_same_weights(model, tiny)
    # the default local path wins over the Hub when present
    monkeypatch.chdir(tmp_path)
    local = tmp_path / loading.DEFAULT_LOCAL_PATH
    local.parent.mkdir(parents=True)
    local.write_bytes(path.read_bytes())
    assert resolve_checkpoint(None) == loading.DEFAULT_LOCAL_PATH


def test_wrong_keys_strict_error(tmp_path, tiny):
    sd = dict(tiny.state_dict())
    sd.pop("camera_head.embed_pose.weight")
    sd["aggregator.bogus"] = torch.zeros(1)
    sd["depth_head.norm.weight"] = torch.zeros(7)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(RuntimeError) as err:
        StreamVGGT.from_pretrained(path, config=StreamVGGTConfig.tiny())
    msg = str(err.value)
    assert "bad.pth" in msg and "1 missing keys" in msg and "camera_head.embed_pose.weight" in msg
    assert "1 unexpected keys" in msg and "1 shape mismatches" in msg
    # a full-size config cannot take tiny weights
    with pytest.raises(RuntimeError, match="does not match"):
        StreamVGGT.from_pretrained(tmp_path / "bad.pth")


def test_pickled_objects_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "obj": loading.WeightsNotFoundError("x")}, path)
    with pytest.raises(Exception):  # noqa: B017 - weights_only refuses arbitrary classes
        read_state_dict(path)
