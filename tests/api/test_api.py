"""The Python API (``langvggt4d``): the README's example, run on a small synthetic scene, gives exactly the fields,
depth and cameras ``python -m inference.run`` writes for the same inputs; ``save`` writes the command's bytes;
queries give the masks of ``eval.query --exact``; a decoder goes through the Hub contract and back unchanged."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from inference.outputs import LEVELS, OutputLayout, read_depth, read_fields
from tests.conftest import REPO_ROOT
from tests.reliability.conftest import tree_diff

W, H, N = 84, 56, 5


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A synthetic scene (frames only), a tiny random decoder as a Hub folder recording its training width, and a
    random autoencoder recording the hash text encoder."""
    from model.autoencoder import FeatureAutoencoder
    from model.decoder import DecoderConfig, SemanticBridgingDecoder
    from model.decoder_io import save_pretrained
    from model.streamvggt.config import StreamVGGTConfig
    from preprocess import make_synthetic

    root = tmp_path_factory.mktemp("api")
    scene = root / "scene"
    make_synthetic.main(["--out", str(scene), "--frames", str(N), "--width", str(W), "--height", str(H),
                         "--no-progress"])
    cfg = StreamVGGTConfig.tiny()
    torch.manual_seed(0)
    dec = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=2 * cfg.embed_dim, layers=tuple(cfg.dpt_layers)))
    dec.source_info = {"token_info": {"backbone": "tiny-random-seed0",
                                      "preprocess": {"target_width": W, "mode": "resize"}}}
    save_pretrained(dec, root / "decoder")
    torch.manual_seed(1)
    FeatureAutoencoder().save(root / "autoencoder", extra={"text_encoder": "hash-bow(dim=512,seed=0)"})
    return {"root": root, "scene": scene, "decoder": root / "decoder", "ae": root / "autoencoder"}


def readme_example() -> str:
    """The README's "Python API" code block."""
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture(scope="module")
def both(parts):
    """The README example's ``out`` and the command's output folder for the same inputs."""
    from inference.run import main

    root = parts["root"]
    cmd = root / "cmd"
    main(["--source", str(parts["scene"]), "--decoder", str(parts["decoder"]), "--backbone", "tiny:0",
          "--autoencoder", str(parts["ae"]), "--out", str(cmd), "-q"])
    code = readme_example()
    for demo, here in (("outputs/demo/run", parts["decoder"]), ("outputs/demo/autoencoder", parts["ae"]),
                       ("outputs/demo/scene", parts["scene"]), ("outputs/demo/api", root / "saved")):
        assert f'"{demo}"' in code, demo
        code = code.replace(f'"{demo}"', repr(str(here)))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102  (our own README, the point of the test)
    return namespace, cmd


def test_readme_example_gives_exactly_what_inference_run_writes(both):
    namespace, cmd = both
    out = namespace["out"]
    layout = OutputLayout(cmd)
    keys = layout.field_keys()
    assert out.keys == keys and len(keys) == N and out.levels == LEVELS
    for i, key in enumerate(keys):
        fields, _ = read_fields(layout.fields(key))
        for level in LEVELS:
            assert out.fields[level].shape == (N, 3, H, W)
            assert torch.equal(out.fields[level][i], fields[level]), (key, level)
        assert torch.equal(out.valid[i], fields["valid"].bool())
        geo, _ = read_depth(layout.depth(key))
        assert torch.equal(out.depth[i], geo["depth"]) and torch.equal(out.conf[i], geo["conf"])
        assert torch.equal(out.extrinsics[i], geo["extrinsics"]) and torch.equal(out.intrinsics[i], geo["intrinsics"])
    assert out.depth.shape == (N, H, W) and out.extrinsics.shape == (N, 3, 4) and out.intrinsics.shape == (N, 3, 3)
    assert out.rgb.shape == (N, 3, H, W) and out.rgb.dtype == torch.uint8


def test_save_writes_the_bytes_inference_run_writes(both, parts):
    _, cmd = both
    assert tree_diff(parts["root"] / "saved", cmd) == []


def test_query_gives_the_masks_of_eval_query_exact(both, parts):
    from eval.query import query_fields
    from eval.query.decode import autoencoder_decoder
    from inference.visualize import load_png
    from model.text import build_text_encoder

    namespace, cmd = both
    hits = namespace["hits"]
    assert hits.relevancy.shape == (N, len(LEVELS), H, W) and hits.masks.shape == (N, H, W)
    assert hits.masks.dtype == torch.bool and hits.levels.shape == (N,)
    assert ((hits.relevancy > 0) & (hits.relevancy < 1)).all()
    encode = build_text_encoder("hash").encode_text
    summary = query_fields(cmd, ["red ball"], parts["root"] / "q", encode, autoencoder_decoder(parts["ae"]),
                           exact=True, video=False, ply=False)["red ball"]
    for i, key in enumerate(namespace["out"].keys):
        png = load_png(parts["root"] / "q" / "red_ball" / "mask" / f"{key}.png") > 127
        assert np.array_equal(hits.masks[i].numpy(), png), key
        assert LEVELS[int(hits.levels[i])] == summary["frames"][key]["level"]


def test_frames_in_memory_give_the_same_fields(both, parts):
    from inference.visualize import load_png
    from langvggt4d import LangVGGT4D

    namespace, _ = both
    frames = [load_png(p) for p in sorted((parts["scene"] / "rgb" / "2x").glob("*.png"))]
    system = LangVGGT4D.from_pretrained(backbone="tiny:0", decoder=parts["decoder"], device="cpu")
    mem = system.predict(np.stack(frames))
    ref = namespace["out"]
    assert all(torch.equal(mem.fields[lvl], ref.fields[lvl]) for lvl in LEVELS)
    assert torch.equal(mem.depth, ref.depth) and torch.equal(mem.extrinsics, ref.extrinsics)
    with pytest.raises(TypeError, match="chunks"):  # not a flag of inference.run
        system.predict(parts["scene"], chunks=4)
    with pytest.raises(TypeError, match="chunk"):  # an old spelling is not a keyword: one name per flag
        system.predict(parts["scene"], chunk=4)


def test_decoder_hub_round_trip(parts, tmp_path):
    from model.decoder_io import HUB_CONFIG_FILE, MODEL_FILE, from_pretrained, save_pretrained
    from model.published_decoder import PublishedDecoderConfig, PublishedLanguageHead

    dec = from_pretrained(str(parts["decoder"]))
    assert dec.source_info["token_info"]["preprocess"]["target_width"] == W
    save_pretrained(dec, tmp_path / "again")
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == [HUB_CONFIG_FILE, MODEL_FILE]
    assert tree_diff(tmp_path / "again", parts["decoder"]) == []  # byte-deterministic
    back = from_pretrained(tmp_path / "again")
    assert type(back) is type(dec) and back.config == dec.config
    own, loaded = dec.state_dict(), back.state_dict()
    assert own.keys() == loaded.keys() and all(torch.equal(own[k], loaded[k]) for k in own)
    torch.manual_seed(2)
    head = PublishedLanguageHead(PublishedDecoderConfig.tiny())
    save_pretrained(head, tmp_path / "published")
    back = from_pretrained(tmp_path / "published")
    assert isinstance(back, PublishedLanguageHead) and back.config == head.config
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in head.state_dict().items())


def test_load_refuses_a_folder_that_is_no_output(tmp_path):
    from langvggt4d import Prediction
    from utils.cli import UserError

    with pytest.raises(UserError, match="no meta.json") as e:
        Prediction.load(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_a_hub_repo_id_is_fetched_with_huggingface_hub(parts, tmp_path, monkeypatch):
    """``from_pretrained("<user>/<repo>")`` asks ``huggingface_hub.snapshot_download`` for exactly the two files of
    the contract and loads what it returns; without network (HF_HUB_OFFLINE, empty cache) it is one clear error."""
    import huggingface_hub

    from model.decoder_io import HUB_CONFIG_FILE, MODEL_FILE, DecoderLoadError, from_pretrained

    calls = []

    def fake_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision, sorted(allow_patterns)))
        return str(parts["decoder"])

    monkeypatch.chdir(tmp_path)  # "someone/decoder" is no local path here
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    dec = from_pretrained("someone/decoder", revision="v1")
    assert calls == [("someone/decoder", "v1", sorted([HUB_CONFIG_FILE, MODEL_FILE]))]
    assert dec.source_info["path"] == str(parts["decoder"])
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DecoderLoadError, match="no such decoder path, and no Hugging Face Hub repo"):
        from_pretrained("someone/not-cached")
