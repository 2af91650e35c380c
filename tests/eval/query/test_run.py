"""eval.query on hand-made CLIP-dimensional fields: heatmaps, masks, overlays, mp4, relevancy PLY, IoU."""

from __future__ import annotations

import json

import numpy as np
import torch

import eval.query.text as text_mod
from inference.geometry import fov_intrinsics
from inference.pipeline import ChunkOutput, Frame, InferenceSettings, run_inference
from inference.ply import read_ply
from inference.visualize import load_png
from preprocess.crop import CropInfo

H = W = 48
NAMES = ("red ball", "wooden table")


def ball_mask(i):
    yy, xx = np.mgrid[:H, :W]
    return (yy - 24) ** 2 + (xx - 12 - 3 * i) ** 2 < 10 ** 2


class OraclePredictor:
    """Fields = text embedding of the region name under each pixel (plus noise), flat depth, fixed camera."""

    def __init__(self, enc):
        self.emb = enc(list(NAMES))  # (2, D)

    def __call__(self, frames, keep):
        S = len(frames)
        g = torch.Generator().manual_seed(0)
        fields = []
        for f in frames:
            m = torch.from_numpy(ball_mask(f.index))
            x = torch.where(m[None], self.emb[0].view(-1, 1, 1), self.emb[1].view(-1, 1, 1))
            fields.append(x + 0.02 * torch.randn(x.shape, generator=g))
        fl = torch.stack(fields)
        ext = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1).expand(S, 3, 4)
        K = torch.as_tensor(fov_intrinsics(1.0, 1.0, (H, W)), dtype=torch.float32).expand(S, 3, 3)
        return ChunkOutput(fields={lvl: fl for lvl in ("small", "middle", "large")},
                           rgb=torch.stack([f.image for f in frames]), depth=torch.ones(S, H, W),
                           conf=torch.full((S, H, W), 2.0), extrinsics=ext, intrinsics=K)


def test_query_outputs_and_iou(tmp_path):
    from eval.query import main, query_fields, slug

    enc = text_mod.HashTextEncoder(dim=512)
    frames = (Frame(f"{i + 1:06d}", i, np.full((H, W, 3), 90, np.uint8), torch.full((3, H, W), 0.3),
                    CropInfo.identity((H, W))) for i in range(3))
    run_inference(frames, 3, OraclePredictor(enc.encode_text), tmp_path / "inf",
                  InferenceSettings(chunk=2, pca=False, conf_percentile=0.0, point_stride=4))
    res = query_fields(tmp_path / "inf", ["red ball"], tmp_path / "q", enc.encode_text, video=True, fps=3)
    folder = tmp_path / "q" / slug("red ball")
    assert slug("Red Ball!") == "red_ball" and folder.name == "red_ball"
    ious = []
    for i in range(3):
        key = f"{i + 1:06d}"
        mask = load_png(folder / "mask" / f"{key}.png") > 127
        assert mask.shape == (H, W)
        gt = ball_mask(i)
        ious.append((mask & gt).sum() / (mask | gt).sum())
        assert load_png(folder / "overlay" / f"{key}.png").shape == (H, W, 3)
        assert load_png(folder / "heatmap" / f"{key}.png").shape == (H, W, 3)
        assert res["red ball"]["frames"][key]["area"] == int(mask.sum())
    assert min(ious) > 0.8, ious
    assert (folder / "overlay.mp4").stat().st_size > 0
    ply = read_ply(folder / "relevancy.ply")
    assert len(ply["xyz"]) == 3 * (H // 4) * (W // 4)
    assert len(np.unique(ply["rgb"], axis=0)) > 2  # coloured by relevancy, not uniform
    assert not (folder / ".ply_values").exists()
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    assert summary["queries"] == ["red ball"]
    # CLI: hash encoder, forced level, no video
    main(["--fields", str(tmp_path / "inf"), "--text", "wooden table", "--hash-text", "--level", "large",
          "--no-video", "--no-ply", "--out", str(tmp_path / "q2"), "--device", "cpu", "-q"])
    s2 = json.loads((tmp_path / "q2" / "wooden_table" / "summary.json").read_text())
    assert all(v["level"] == "large" for v in s2["frames"].values())
