"""The streaming loop with a fake predictor: layout, shapes, uncrop, cameras, fused PLY, resume."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors import safe_open

from inference.geometry import fov_intrinsics, is_rotation
from inference.outputs import LEVELS, OutputLayout, read_fields
from inference.pipeline import ChunkOutput, Frame, InferenceSettings, run_inference
from inference.ply import read_ply
from preprocess.crop import CropInfo
from tests.reliability.conftest import tree_diff

H, W, h, w = 20, 12, 14, 14  # original 20x12 -> resized 23x14 (crop rows 4..18)
CROP = CropInfo(orig_hw=(H, W), resized_hw=(23, 14), box=(4, 0, h, w))


def make_frames(n):
    for i in range(n):
        rgb = np.full((H, W, 3), 10 * i, np.uint8)
        yield Frame(key=f"{i + 1:06d}", index=i, rgb=rgb, image=torch.full((3, h, w), i / n), crop=CROP)


class FakePredictor:
    def __init__(self):
        self.calls = 0
        self.kept = 0

    def __call__(self, frames, keep):
        self.calls += 1
        self.kept += sum(keep)
        S = len(frames)
        idx = torch.tensor([f.index for f in frames], dtype=torch.float32)
        ramp = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(S, 3, h, w)
        fields = {lvl: ramp + j + idx.view(S, 1, 1, 1) for j, lvl in enumerate(LEVELS)}
        ang = 0.1 * idx
        R = torch.zeros(S, 3, 3)
        R[:, 0, 0], R[:, 0, 2], R[:, 1, 1], R[:, 2, 0], R[:, 2, 2] = ang.cos(), ang.sin(), 1, -ang.sin(), ang.cos()
        ext = torch.cat([R, torch.zeros(S, 3, 1)], dim=-1)
        K = torch.as_tensor(fov_intrinsics(1.0, 1.0, (h, w)), dtype=torch.float32).expand(S, 3, 3)
        conf = 1 + torch.arange(h * w, dtype=torch.float32).view(1, h, w).expand(S, h, w)
        return ChunkOutput(fields=fields, rgb=torch.stack([f.image for f in frames]),
                           depth=torch.full((S, h, w), 2.0), conf=conf, extrinsics=ext, intrinsics=K)


def test_pipeline_layout_shapes_and_resume(tmp_path):
    s = InferenceSettings(chunk=3, conf_percentile=50.0, point_stride=1, video=True, fps=5,
                          extra_meta={"autoencoder": "ae/"})
    pred = FakePredictor()
    summary = run_inference(make_frames(5), 5, pred, tmp_path, s)
    assert summary["written"] == 5 and pred.calls == 2
    lay = OutputLayout(tmp_path)
    keys = [f"{i:06d}" for i in range(1, 6)]
    for i, key in enumerate(keys):
        f, meta = read_fields(lay.fields(key))
        assert meta["frame_key"] == key and meta["frame_index"] == i and meta["lang_dim"] == 3
        assert meta["autoencoder"] == "ae/"
        for j, lvl in enumerate(LEVELS):
            assert f[lvl].shape == (3, H, W) and f[lvl].dtype == torch.float32
            # value = ramp + level offset + frame index (uncropped, ramp along width preserved)
            assert abs(float(f[lvl][0, 10, 0]) - (j + i)) < 0.1 and float(f[lvl][0, 10].diff().min()) > 0
        valid = f["valid"].bool()
        assert valid[4:16].all() and not valid[:2].any() and not valid[-2:].any()
        assert lay.rgb(key).exists() and all(lay.pca(lvl, key).exists() for lvl in LEVELS)
        with safe_open(str(lay.depth(key)), "pt") as d:
            assert d.get_tensor("depth").shape == (H, W) and d.get_tensor("conf").shape == (H, W)
    cams = json.loads(lay.cameras.read_text())["frames"]
    assert len(cams) == 5
    for c in cams:
        E, K = np.array(c["extrinsics"]), np.array(c["intrinsics"])
        assert E.shape == (3, 4) and K.shape == (3, 3) and is_rotation(E[:, :3])
        assert (c["height"], c["width"]) == (H, W)
        np.testing.assert_allclose(K[0, 2], W / 2, atol=1e-6)  # no horizontal crop: centre column
        np.testing.assert_allclose(K[1, 2], (h / 2 + 4) / (23 / H), atol=1e-6)  # crop offset: 4 rows
    fused = read_ply(lay.fused)
    per_frame = [len(read_ply(lay.points(k))["xyz"]) for k in keys]
    assert len(fused["xyz"]) == sum(per_frame) == summary["fused_points"]
    n_valid = int(read_fields(lay.fields(keys[0]))[0]["valid"].sum())
    assert n_valid == 13 * W and per_frame[0] == n_valid // 2  # valid (cropped) pixels, top 50% by confidence
    # colours come from the frames (frame i is grey 10*i) in frame order
    assert fused["rgb"][: per_frame[0]].max() == 0 and fused["rgb"][-1].tolist() == [40, 40, 40]
    assert np.allclose(fused["xyz"][: per_frame[0], 2], 2.0, atol=1e-5)  # frame 0 camera = world, depth 2
    meta = json.loads(lay.meta.read_text())
    assert meta["frames"] == keys and meta["lang_dim"] == 3 and (meta["height"], meta["width"]) == (H, W)
    assert lay.video("rgb").exists() and lay.video("pca_small").exists()

    # resume: nothing to redo, the predictor still streams for context but writes nothing
    mtime = lay.fields(keys[2]).stat().st_mtime_ns
    pred2 = FakePredictor()
    again = run_inference(make_frames(5), 5, pred2, tmp_path, s)
    assert again["written"] == 0 and again["skipped"] == 5 and pred2.kept == 0
    assert lay.fields(keys[2]).stat().st_mtime_ns == mtime
    # a missing frame is written again alone, from a prediction of its whole chunk (frames 4-5)
    mtime = lay.fields(keys[4]).stat().st_mtime_ns
    lay.fields(keys[3]).unlink()
    pred3 = FakePredictor()
    third = run_inference(make_frames(5), 5, pred3, tmp_path, s)
    assert third["written"] == 1 and pred3.kept == 2 and lay.fields(keys[3]).exists()
    assert lay.fields(keys[4]).stat().st_mtime_ns == mtime


class BatchSizeDependent(FakePredictor):
    """Outputs that move with the number of frames predicted together, as a matrix product's last bits may
    with its batch size on some CPUs' kernels (AVX2) and not on others."""

    def __call__(self, frames, keep):
        out = super().__call__(frames, keep)
        shift = 1e-3 * sum(keep)
        out.fields = {k: v + shift for k, v in out.fields.items()}
        out.depth = out.depth + shift
        return out


def test_a_resume_mid_chunk_writes_the_bytes_of_an_uninterrupted_run(tmp_path):
    """A kill between two frames of one chunk leaves the first written: the resumed run predicts the whole chunk
    again (the batch the uninterrupted run had), so even batch-size-dependent numbers give the same bytes."""
    s = InferenceSettings(chunk=2, point_stride=1)
    run_inference(make_frames(5), 5, BatchSizeDependent(), tmp_path / "a", s)
    run_inference(make_frames(5), 5, BatchSizeDependent(), tmp_path / "b", s)
    lay = OutputLayout(tmp_path / "b")
    lay.fields("000004").unlink()  # frames 3-4 are one chunk: 3 kept, 4 to write again
    lay.depth("000004").unlink()
    again = run_inference(make_frames(5), 5, BatchSizeDependent(), tmp_path / "b", s)
    assert again["written"] == 1
    assert tree_diff(tmp_path / "a", tmp_path / "b") == []
