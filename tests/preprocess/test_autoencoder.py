"""Feature autoencoder: published architecture, save/load, loss, and the oracle round trip (mean cos >= 0.999)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

from model.autoencoder import (
    CLIP_DECODER_DIMS,
    CLIP_ENCODER_DIMS,
    VIDEO_DECODER_DIMS,
    VIDEO_ENCODER_DIMS,
    FeatureAutoencoder,
    autoencoder_loss,
    decode,
    default_dims,
)
from preprocess import train_autoencoder as ta
from tests.preprocess.semantics_fixture import synthetic_scene


def test_clip_architecture_matches_langsplat():
    m = FeatureAutoencoder()
    kinds = [type(x).__name__ for x in m.encoder]
    assert kinds == ["Linear"] + ["BatchNorm1d", "ReLU", "Linear"] * 4
    assert [x.out_features for x in m.encoder if isinstance(x, nn.Linear)] == list(CLIP_ENCODER_DIMS)
    assert [type(x).__name__ for x in m.decoder] == ["Linear"] + ["ReLU", "Linear"] * 5
    assert [x.out_features for x in m.decoder if isinstance(x, nn.Linear)] == list(CLIP_DECODER_DIMS)
    assert m.encoder[0].in_features == 512 and m.decoder[0].in_features == 3
    assert "encoder.1.running_mean" in m.state_dict()  # BN keys at the published positions
    x = torch.nn.functional.normalize(torch.randn(7, 512), dim=-1)
    z, r = m(x)
    assert z.shape == (7, 3) and r.shape == (7, 512)
    assert torch.allclose(z.norm(dim=-1), torch.ones(7), atol=1e-5)
    assert torch.allclose(r.norm(dim=-1), torch.ones(7), atol=1e-5)
    assert default_dims(512, 3) == (CLIP_ENCODER_DIMS, CLIP_DECODER_DIMS)
    assert default_dims(4096, 6) == (VIDEO_ENCODER_DIMS, VIDEO_DECODER_DIMS)
    enc, dec = default_dims(32, 6)
    assert enc[-1] == 6 and dec[-1] == 32
    with pytest.raises(ValueError, match="in_dim"):
        FeatureAutoencoder(512, (3,), (16, 256))


def test_loss_and_decode_helper_and_save_load(tmp_path):
    x = torch.nn.functional.normalize(torch.randn(5, 512), dim=-1)
    assert float(autoencoder_loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(autoencoder_loss(-x, x, cos_weight=1.0)) == pytest.approx(float((2 * x).pow(2).mean()) + 2, rel=1e-4)
    torch.manual_seed(0)
    m = FeatureAutoencoder().eval()
    z = torch.nn.functional.normalize(torch.randn(2, 4, 6, 3), dim=-1)
    out = decode(m, z)
    assert out.shape == (2, 4, 6, 512) and torch.allclose(out.norm(dim=-1), torch.ones(2, 4, 6), atol=1e-5)
    m.save(tmp_path / "ae")
    m2 = FeatureAutoencoder.load(tmp_path / "ae")
    assert torch.allclose(decode(m2, z), out, atol=1e-6)
    assert json.loads((tmp_path / "ae" / "config.json").read_text())["encoder_dims"] == list(CLIP_ENCODER_DIMS)
    with pytest.raises(FileNotFoundError, match="train_autoencoder"):
        FeatureAutoencoder.load(tmp_path / "nope")
    # a LangSplat-style plain state dict (.pth, same encoder.<i>/decoder.<i> keys) with non-default widths
    other = FeatureAutoencoder(512, (128, 3), (32, 512)).eval()
    torch.save(other.state_dict(), tmp_path / "best_ckpt.pth")
    loaded = FeatureAutoencoder.load(tmp_path / "best_ckpt.pth")
    assert loaded.encoder_dims == (128, 3) and loaded.decoder_dims == (32, 512)
    assert torch.allclose(decode(loaded, z), decode(other, z), atol=1e-6)


@pytest.fixture(scope="module")
def oracle_scene(tmp_path_factory):
    from model.clip import ClipEncoder
    from preprocess.extract_semantics import extract_oracle

    scene = synthetic_scene(tmp_path_factory.mktemp("ae") / "scene", frames=8)
    extract_oracle(scene, ClipEncoder.tiny(seed=0), video=True)
    return scene


def test_oracle_roundtrip_cosine(oracle_scene, tmp_path):
    # Recipe batch 64, but ~2000 Adam steps are needed to separate the ~20 distinct (highly correlated) tiny-CLIP
    # name embeddings in 3-d: the ~290 rows of an 8-frame scene give 5 steps per epoch, hence 400 epochs at lr 1e-3
    # (the recipe's 100 epochs reach ~0.97 on this little data).
    out = tmp_path / "ckpt"
    assert ta.main(["--scenes", str(oracle_scene), "--features", "clip_features", "--dim", "3", "--out", str(out),
                    "--epochs", "400", "--batch-size", "64", "--lr", "1e-3", "--device", "cpu"]) == 0
    model = FeatureAutoencoder.load(out)
    enc_dir = oracle_scene / "clip_features-language_features_dim3"
    keys = sorted(p.name[:-6] for p in (oracle_scene / "clip_features").glob("*_f.npy"))
    assert sorted(p.name[:-6] for p in enc_dir.glob("*_f.npy")) == keys
    worst, cosines = 1.0, []
    for key in keys:
        f = torch.from_numpy(np.load(oracle_scene / "clip_features" / f"{key}_f.npy"))
        z = np.load(enc_dir / f"{key}_f.npy")
        assert z.dtype == np.float32 and z.shape == (f.shape[0], 3)
        assert np.allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
        assert np.array_equal(np.load(enc_dir / f"{key}_s.npy"), np.load(oracle_scene / "clip_features" / f"{key}_s.npy"))
        cos = torch.nn.functional.cosine_similarity(decode(model, torch.from_numpy(z)), f, dim=-1)
        worst = min(worst, float(cos.min()))
        cosines.append(cos)
    # Bounds from the measured spread (python -m benchmarks.kernel_spread --probes autoencoder: seeds 0-2 under
    # the native AVX-512/AMX kernels, ATEN_CPU_CAPABILITY default and avx2, and an emulated AVX2-only CPU, 12 runs):
    # mean cosine 0.99981-0.99997, worst region 0.99876-0.99987; an AVX2-only machine gave a worst of 0.9896
    # (issue 27). The worst of ~290 rows after 400 epochs of Adam is chaotic in the last digits (rounding moves
    # which of the 21 correlated names is fitted last), the mean is not: the mean's bound is 5x the measured
    # 1 - cos, the worst's 2x the worst ever seen. An untrained or mis-decoding autoencoder is far below both.
    mean = float(torch.cat(cosines).mean())
    assert mean >= 0.999, f"mean region cosine {mean:.5f}"
    assert worst >= 0.98, f"worst region cosine {worst:.4f}"
    # a second run without --overwrite refuses to replace the outputs
    with pytest.raises(SystemExit, match="overwrite"):
        ta.main(["--scenes", str(oracle_scene), "--dim", "3", "--out", str(out), "--epochs", "1"])
    # encode-only with the saved autoencoder into another folder name
    assert ta.main(["--scenes", str(oracle_scene), "--dim", "3", "--load", str(out), "--output-name", "again",
                    "--no-progress"]) == 0
    again = oracle_scene / "clip_features-again_dim3"
    assert np.allclose(np.load(again / f"{keys[0]}_f.npy"), np.load(enc_dir / f"{keys[0]}_f.npy"), atol=1e-6)
    # the text encoder of the features is recorded (queries are checked against it) ...
    assert json.loads((out / "config.json").read_text())["text_encoder"] == "tiny-random(seed=0)"
    # ... and features of another encoder are not encoded with it
    meta = oracle_scene / "clip_features" / "meta.json"
    original = meta.read_text()
    meta.write_text(json.dumps(dict(json.loads(original), clip="hash-bow(dim=512,seed=0)")))
    try:
        with pytest.raises(SystemExit, match="--clip tiny"):
            ta.main(["--scenes", str(oracle_scene), "--dim", "3", "--load", str(out), "--output-name", "third",
                     "--no-progress"])
        assert not (oracle_scene / "clip_features-third_dim3").exists()
    finally:
        meta.write_text(original)


def test_video_features_float64_zero_rows_dim6(tmp_path):
    # precomputed E5-style video features: float64, zero rows for ids without a caption
    scene = tmp_path / "v"
    vd = scene / "video_features"
    vd.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for t in range(3):
        f = rng.normal(size=(4, 64))
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        f[3] = 0.0
        np.save(vd / f"{t + 1:06d}_f.npy", f)
        np.save(vd / f"{t + 1:06d}_s.npy", np.full((1, 6, 8), -1.0, np.float32))
    x = ta.load_rows([scene], "video_features")
    assert x.shape == (9, 64) and x.dtype == torch.float32
    second = tmp_path / "v2"
    shutil.copytree(scene, second)
    assert ta.load_rows([scene, second], "video_features").shape == (18, 64)  # many scenes pooled
    assert ta.main(["--scenes", str(scene), str(second), "--features", "video_features", "--dim", "6",
                    "--in-dim", "64", "--out", str(tmp_path / "ae6"), "--epochs", "2", "--batch-size", "4",
                    "--no-progress"]) == 0
    for sc in (scene, second):  # one shared autoencoder encodes every scene
        z = np.load(sc / "video_features-language_features_dim6" / "000001_f.npy")
        assert z.shape == (4, 6) and z.dtype == np.float32
    assert json.loads((tmp_path / "ae6" / "config.json").read_text())["encoder_dims"][-1] == 6
    with pytest.raises(SystemExit, match="in-dim"):
        ta.main(["--scenes", str(scene), "--features", "video_features", "--dim", "6", "--in-dim", "512",
                 "--out", str(tmp_path / "ae7")])


def test_features_of_different_text_encoders_are_refused(tmp_path):
    scenes = []
    for name, encoder in (("a", "ViT-B-16:laion2b_s34b_b88k"), ("b", "hash-bow(dim=512,seed=0)")):
        d = tmp_path / name / "clip_features"
        d.mkdir(parents=True)
        (d / "meta.json").write_text(json.dumps({"clip": encoder}))
        scenes.append(tmp_path / name)
    with pytest.raises(SystemExit, match="different text encoders") as e:
        ta.main(["--scenes", *map(str, scenes), "--dim", "3", "--out", str(tmp_path / "x")])
    assert "hash-bow" in str(e.value) and "laion2b" in str(e.value)
    assert not (tmp_path / "x").exists()
    assert ta.features_text_encoder(scenes[:1]) == "ViT-B-16:laion2b_s34b_b88k"
    (scenes[1] / "clip_features" / "meta.json").unlink()  # features made elsewhere: nothing to record
    assert ta.features_text_encoder(scenes) is None


def test_missing_features_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="extract_semantics"):
        ta.main(["--scenes", str(tmp_path / "nothing"), "--dim", "3", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
