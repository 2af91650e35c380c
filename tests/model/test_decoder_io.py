"""One decoder loader for every file kind, and no pickle ever executed at any place a checkpoint path is taken."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from model.decoder import DecoderConfig, SemanticBridgingDecoder
from model.decoder_io import DecoderLoadError, decoder_kind, load_decoder, read_decoder, save_decoder_file
from model.published_decoder import PublishedDecoderConfig, PublishedLanguageHead
from model.safe_load import UnreadableCheckpointError, UnsafeCheckpointError
from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S


class _Hostile:
    """Unpickling this object would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _published_pth(path, head, extra=None):
    obj = {"epoch": 100, "model_state_dict": head.state_dict(),
           "optimizer_state_dict": torch.optim.AdamW(head.parameters()).state_dict(),
           "scaler": {"scale": 1024.0}, "loss": torch.tensor(0.5), "args": argparse.Namespace(lang_dim=3, lr=4e-5)}
    obj.update(extra or {})
    torch.save(obj, path)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def head():
    torch.manual_seed(0)
    return PublishedLanguageHead(PublishedDecoderConfig.tiny(dim_in=32, hidden_dim=4)).eval()


def test_published_pth_loads_strictly_with_its_namespace(tmp_path, head):
    _published_pth(tmp_path / "checkpoint_epoch_100.pth", head)
    cfg, _, info = read_decoder(tmp_path / "checkpoint_epoch_100.pth")
    assert isinstance(cfg, PublishedDecoderConfig) and info["epoch"] == 100 and info["args"]["lang_dim"] == 3
    assert info["loss"] == 0.5
    loaded = load_decoder(tmp_path / "checkpoint_epoch_100.pth", layers=(0, 1, 2, 3))
    assert isinstance(loaded, PublishedLanguageHead) and not loaded.training and decoder_kind(loaded) == "published"
    assert loaded.config.layers == (0, 1, 2, 3) and _same_weights(loaded, head)


def test_published_pth_with_a_missing_key_is_refused(tmp_path, head):
    sd = head.state_dict()
    sd.pop("lang_decoder_large.final_conv.bias")
    torch.save({"model_state_dict": sd, "args": argparse.Namespace()}, tmp_path / "bad.pth")
    with pytest.raises(DecoderLoadError, match="missing"):
        load_decoder(tmp_path / "bad.pth")


def test_our_safetensors_file_and_published_key_safetensors(tmp_path, head):
    ours = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=32)).eval()
    save_decoder_file(ours, tmp_path / "ours.safetensors")
    first = (tmp_path / "ours.safetensors").read_bytes()
    save_decoder_file(ours, tmp_path / "ours.safetensors")
    assert (tmp_path / "ours.safetensors").read_bytes() == first  # one canonical metadata key: same bytes
    again = load_decoder(tmp_path / "ours.safetensors")
    assert isinstance(again, SemanticBridgingDecoder) and again.config == ours.config and _same_weights(again, ours)
    save_decoder_file(head, tmp_path / "head.safetensors")
    assert _same_weights(load_decoder(tmp_path / "head.safetensors"), head)
    from safetensors.torch import save_file
    save_file(head.state_dict(), str(tmp_path / "plain.safetensors"))  # published keys, no config: widths inferred
    plain = load_decoder(tmp_path / "plain.safetensors", layers=(0, 1, 2, 3))
    assert isinstance(plain, PublishedLanguageHead) and _same_weights(plain, head)
    save_file(ours.state_dict(), str(tmp_path / "anon.safetensors"))
    with pytest.raises(DecoderLoadError, match="no decoder config"):
        load_decoder(tmp_path / "anon.safetensors")


def test_bad_paths_give_one_clear_error(tmp_path):
    with pytest.raises(DecoderLoadError, match="not found"):
        load_decoder(tmp_path / "missing.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(UnreadableCheckpointError, match="empty"):
        load_decoder(tmp_path / "empty.pth")
    (tmp_path / "fake.safetensors").write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(UnreadableCheckpointError, match="safetensors"):
        load_decoder(tmp_path / "fake.safetensors")
    (tmp_path / "trunc.pth").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(UnreadableCheckpointError, match="not a readable"):
        load_decoder(tmp_path / "trunc.pth")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(DecoderLoadError, match="unknown decoder file type"):
        load_decoder(tmp_path / "model.onnx")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DecoderLoadError, match="no decoder checkpoint"):
        load_decoder(tmp_path / "folder")


@pytest.fixture
def hostile(tmp_path, head):
    """A published-looking .pth whose pickle would create ``marker`` when loaded."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "checkpoint_epoch_100.pth"
    _published_pth(path, head, extra={"hook": _Hostile(marker)})
    yield path
    assert not marker.exists(), "a pickle was executed"


def test_hostile_pth_is_refused_by_every_loader(hostile, tmp_path):
    from model.autoencoder import FeatureAutoencoder
    from model.clip import _read_state_dict
    from model.decoder import init_feature_extractor_from_backbone
    from model.decoder_io import read_published_checkpoint
    from model.safe_load import read_weights
    from model.streamvggt.streamvggt import StreamVGGT

    loaders = {
        "decoder": lambda: load_decoder(hostile),
        "published reader (train --init)": lambda: read_published_checkpoint(hostile),
        "backbone": lambda: StreamVGGT.from_pretrained(hostile),
        "autoencoder": lambda: FeatureAutoencoder.load(hostile),
        "open_clip weights": lambda: _read_state_dict(hostile),
        "SAM weights": lambda: read_weights(hostile),
        "DPT init": lambda: init_feature_extractor_from_backbone(
            SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=32)), hostile),
    }
    for name, load in loaders.items():
        with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system|nothing of it was executed") as e:
            load()
        assert "\n" not in str(e.value), name


@pytest.mark.parametrize("flag", ["--decoder", "--backbone"])
def test_hostile_pth_on_the_command_line_ends_in_one_line(hostile, tmp_path, flag, head):
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image
    Image.new("RGB", (28, 28), (10, 20, 30)).save(frames / "000001.png")
    good = tmp_path / "good.pth"
    _published_pth(good, head)
    args = {"--decoder": str(good), "--backbone": "tiny"}
    args[flag] = str(hostile)
    cmd = [sys.executable, "-m", "inference.run", "--source", str(frames), "--out", str(tmp_path / "out"),
           "--device", "cpu", *[x for kv in args.items() for x in kv]]
    r = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S,
                       env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    from tests.reliability.conftest import assert_clean_error

    assert_clean_error(r, mentions=hostile)  # (log lines such as the tiny backbone's WARNING are allowed)
    assert not (tmp_path / "out" / "fields").exists()


def test_folder_checkpoint_records_its_kind(tmp_path, head):
    from training.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "run", 3, head, None, {"decoder_config": head.config.to_dict()})
    info = json.loads((tmp_path / "run" / "checkpoint_epoch_3" / "state.json").read_text())
    assert info["decoder_config"]["kind"] == "published"
    again = load_decoder(tmp_path / "run")
    assert isinstance(again, PublishedLanguageHead) and _same_weights(again, head)
