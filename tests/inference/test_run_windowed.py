"""``python -m inference.run --backbone page4d-mask:tiny``: windows of --window frames with --overlap, every
frame's depth and camera, the dynamic mask files, and the backbone recorded in meta.json."""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch

import model.decoder as dec
from inference.outputs import OutputLayout
from model.decoder_io import save_decoder_file


def test_inference_run_with_a_windowed_backbone(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        assert cv2.imwrite(str(frames / f"{i + 1:06d}.png"), rng.integers(0, 255, (28, 42, 3), dtype=np.uint8))
    torch.manual_seed(0)
    decoder = dec.SemanticBridgingDecoder(dec.DecoderConfig.tiny(dim_in=64, layers=(4, 11, 17, 23)))
    save_decoder_file(decoder, tmp_path / "decoder.safetensors")
    from inference.run import main

    out = tmp_path / "out"
    summary = main(["--source", str(frames), "--decoder", str(tmp_path / "decoder.safetensors"), "--out", str(out),
                    "--backbone", "page4d-mask:tiny:0", "--window", "3", "--overlap", "1", "--target-width", "42",
                    "--no-pca", "--no-rgb", "--device", "cpu", "-q"])
    assert summary is not None
    layout = OutputLayout(out)
    cams = json.loads(layout.cameras.read_text())
    assert len(cams["frames"]) == 5
    for i in range(5):
        assert layout.dynamic(f"{i + 1:06d}").is_file() and layout.depth(f"{i + 1:06d}").is_file()
    meta = json.loads(layout.meta.read_text())
    assert meta["backbone_id"] == "page4d-mask-tiny-random-seed0" and meta["window"] == 3


def test_the_viewer_draws_the_dynamic_mask(tmp_path):
    test_inference_run_with_a_windowed_backbone(tmp_path)
    from viewer.scene import FramePictures, load_scene

    layout = OutputLayout(tmp_path / "out")
    scene = load_scene(layout)
    assert "dynamic" in scene.color_modes()
    fp = scene.points["000001"]
    assert fp.colors["dynamic"].shape == fp.colors["rgb"].shape
    assert not np.array_equal(fp.colors["dynamic"], fp.colors["rgb"])
    picture = FramePictures(layout, scene.levels).picture("dynamic", "000001", scene.hw["000001"])
    assert picture.shape == (*scene.hw["000001"], 3) and picture.dtype == np.uint8
