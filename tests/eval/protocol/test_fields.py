"""The evaluator's field sources (eval/protocol/fields.py): our fields, published renders, targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.protocol.fields import OurFields, RendersNpyFields
from tests.eval import synth


def test_field_layouts_agree(toy, tmp_path):
    enc = toy.enc
    ours = OurFields(toy.out)
    ren = RendersNpyFields(toy.dirs, toy.vdir)
    assert ours.frame_indices() == ren.frame_indices() == list(range(synth.T))
    assert ours.has_video() and ren.has_video()
    sem, vid = synth.oracle_fields(3, enc)
    torch.testing.assert_close(ours.semantic(3), sem)
    torch.testing.assert_close(ren.semantic(3), sem)  # (x + 1) / 2 mapped back since strictly positive
    torch.testing.assert_close(ours.video(3), vid)
    assert np.isclose(ren.video(3).numpy(), vid.numpy()).all()  # has zeros: not remapped
    with pytest.raises(KeyError, match="inference"):
        ours.semantic(99)
    with pytest.raises(FileNotFoundError, match="safetensors"):
        OurFields(tmp_path / "nothing_here_dir_missing")


def test_autoencoded_fields_decode_like_predecoded(toy, tmp_path):
    """k=3 fields + a saved FeatureAutoencoder score exactly like the same fields decoded beforehand."""
    from eval.protocol.fields import FieldSource
    from eval.protocol.runner import evaluate_scene
    from eval.query.decode import autoencoder_decoder
    from model.autoencoder import FeatureAutoencoder

    torch.manual_seed(0)
    ae = FeatureAutoencoder(in_dim=toy.enc.dim, encoder_dims=(16, 3), decoder_dims=(16, toy.enc.dim)).eval()
    ae.save(tmp_path / "ae")
    decode = autoencoder_decoder(tmp_path / "ae")
    ours = OurFields(toy.out)
    with torch.no_grad():
        latents = {i: ae.encode(ours.semantic(i)) for i in ours.frame_indices()}

    class Latent(FieldSource):
        def __init__(self, pre: bool) -> None:
            self.pre = pre

        def frame_indices(self):
            return sorted(latents)

        def has_video(self):
            return False

        def semantic(self, i):
            return decode(latents[i]) if self.pre else latents[i]

    a = evaluate_scene(toy.scene, Latent(False), toy.enc, decode=decode, device="cpu")
    b = evaluate_scene(toy.scene, Latent(True), toy.enc, device="cpu")
    assert a["time_sensitive"] is None
    for q, qa in a["time_agnostic"]["queries"].items():
        assert [f["iou"] for f in qa["frames"]] == pytest.approx(
            [f["iou"] for f in b["time_agnostic"]["queries"][q]["frames"]], abs=1e-6)
    with pytest.raises(ValueError, match="autoencoder"):
        evaluate_scene(toy.scene, Latent(False), toy.enc, device="cpu")


def test_target_fields_refuse_two_cameras_on_one_frame(tmp_path):
    import numpy as np

    from eval.protocol.fields import TargetFields

    d = tmp_path / "clip_features"
    d.mkdir()
    for cam in ("cam00", "cam01"):
        np.save(d / f"{cam}-0000_s.npy", -np.ones((4, 2, 2), np.float32))
        np.save(d / f"{cam}-0000_f.npy", np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="cam00"):
        TargetFields(tmp_path, dataset="neu3d")
