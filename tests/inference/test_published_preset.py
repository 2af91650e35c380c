"""``PRESET=published bash scripts/infer.sh`` with a published-format ``.pth`` (tiny head) on synthetic frames.

Portrait and landscape frames whose sides are not multiples of 14: the fields lie on the original pixels in the
original orientation, equal to an independent re-computation of the published path (PIL reading, a quarter turn,
centre crop, fp32 frame-by-frame streaming with a 120-frame cache, the head's stretch onto the turned frame, then
the turn undone), the published picture layout is written, and ``eval.query`` runs on the output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from inference.outputs import OutputLayout, read_fields
from model.autoencoder import FeatureAutoencoder
from model.levels import LEVELS
from model.published_decoder import PublishedDecoderConfig, PublishedLanguageHead
from model.streamvggt.streamvggt import StreamVGGT
from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S

pytestmark = pytest.mark.slow
N = 3


def write_published_pth(path, head: torch.nn.Module) -> None:
    """The published checkpoint layout (the README, "Reproduce the published 4DLangVGGT model") around a head's weights."""
    opt = torch.optim.AdamW(head.parameters(), lr=1e-4)
    torch.save({"epoch": 100, "model_state_dict": head.state_dict(), "optimizer_state_dict": opt.state_dict(),
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                           "_growth_tracker": 0},
                "loss": 0.123, "args": argparse.Namespace(lang_dim=3, lr=4e-5, mode="gt", batch_size=8)}, path)


def make_frames(folder, w: int, h: int, seed: int, rgba: bool = False) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(N):
        img = rng.integers(0, 256, (h, w, 4 if rgba else 3), dtype=np.uint8)
        Image.fromarray(img, "RGBA" if rgba else "RGB").save(folder / f"{i + 1:06d}.png")
        frames.append(img)
    return frames


def published_reference(folder, backbone, head) -> list[dict[str, torch.Tensor]]:
    """The published inference path written independently of inference/: per frame, the 3 levels (3, H, W) on the
    original pixels."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".png", ".jpg", ".jpeg")))
    cache = backbone.aggregator.new_cache(120)
    out = []
    for name in names:
        img = Image.open(folder / name)
        if img.mode == "RGBA":
            img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
        img = img.convert("RGB")
        turned = img.width > img.height
        if turned:
            img = img.transpose(Image.Transpose.ROTATE_90)
        W, H = img.size
        w14, h14 = W // 14 * 14, H // 14 * 14
        left, top = (W - w14) // 2, (H - h14) // 2
        crop = img.crop((left, top, left + w14, top + h14))
        x = torch.from_numpy(np.array(crop)).permute(2, 0, 1).float().div(255)[None, None]  # (1, 1, 3, h, w)
        with torch.no_grad():
            tokens, psi = backbone.aggregator(x, cache=cache)
            lang, _ = head([tokens[i] for i in backbone.config.dpt_layers], x, psi, img_height=H, img_width=W)
        maps = lang[0, 0]  # (3 levels, 3, H, W) on the turned frame
        if turned:
            maps = torch.rot90(maps, -1, dims=(-2, -1))
        out.append({lvl: maps[i] for i, lvl in enumerate(LEVELS)})
    return out


@pytest.fixture(scope="module")
def published_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    backbone = StreamVGGT.tiny(seed=0).eval()
    cfg = PublishedDecoderConfig.tiny(dim_in=backbone.config.embed_dim * 2, layers=tuple(backbone.config.dpt_layers))
    torch.manual_seed(3)
    head = PublishedLanguageHead(cfg)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained checkpoint has
        for m in head.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    head.eval()
    pth = root / "checkpoint_epoch_100.pth"
    write_published_pth(pth, head)
    ae = root / "ae"
    torch.manual_seed(0)
    FeatureAutoencoder(in_dim=512).save(ae)
    scenes = {"portrait": (50, 73, False), "landscape": (75, 45, True)}  # (W, H, RGBA)
    runs = {}
    for name, (w, h, rgba) in scenes.items():
        frames_dir = root / name / "rgb" / "2x"
        make_frames(frames_dir, w, h, seed=len(name), rgba=rgba)
        out = root / f"out_{name}"
        env = dict(os.environ, PYTHON=sys.executable, PRESET="published", DECODER=str(pth), BACKBONE="tiny",
                   AUTOENCODER=str(ae), DEVICE="cpu", VIDEO="0", PUBLISHED_PNG="1", QUERIES="red ball;green box",
                   CLIP="hash")
        r = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "infer.sh"), str(root / name), str(out), "--",
                            "-q"], env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = {"out": out, "frames": frames_dir, "hw": (h, w),
                      "reference": published_reference(frames_dir, backbone, head)}
    return runs


@pytest.mark.parametrize("name", ["portrait", "landscape"])
def test_fields_equal_the_published_path_on_the_original_pixels(published_run, name):
    run = published_run[name]
    lay = OutputLayout(run["out"])
    meta = json.loads(lay.meta.read_text())
    assert meta["preset"] == "published" and meta["decoder_kind"] == "published"
    assert meta["preprocess"] == {"mode": "original"} and meta["window"] == 120
    assert (meta["height"], meta["width"]) == run["hw"]
    for i, key in enumerate(meta["frames"]):
        fields, fmeta = read_fields(lay.fields(key))
        assert fmeta["preset"] == "published"
        assert bool(fields["valid"].all())  # the published stretch covers every pixel
        for level in LEVELS:
            assert fields[level].shape == (3, *run["hw"])
            torch.testing.assert_close(fields[level], run["reference"][i][level], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["portrait", "landscape"])
def test_published_picture_layout(published_run, name):
    run = published_run[name]
    h, w = run["hw"]
    turned_hw = (w, h) if w > h else (h, w)
    for i in range(N):
        for level in LEVELS:
            png = np.asarray(Image.open(run["out"] / "published" / "lang" / level / f"{i + 1:05d}.png"))
            assert png.shape == (*turned_hw, 3)
            ref = run["reference"][i][level]
            if w > h:
                ref = torch.rot90(ref, 1, dims=(-2, -1))
            expect = (ref * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            assert np.abs(png.astype(int) - expect.astype(int)).max() <= 1  # 1e-5 fields can cross a rounding edge
        assert np.asarray(Image.open(run["out"] / "published" / "rgb" / f"{i + 1:05d}.png")).shape == (*turned_hw, 3)


def test_queries_run_on_the_published_fields(published_run):
    run = published_run["landscape"]
    summary = json.loads((run["out"] / "queries" / "summary.json").read_text())
    assert summary["queries"] == ["red ball", "green box"]
    assert all(len(summary["results"][q]["frames"]) == N for q in summary["queries"])
    h, w = run["hw"]
    masks = sorted((run["out"] / "queries").glob("*/mask/*.png"))
    assert len(masks) == 2 * N
    assert all(np.asarray(Image.open(m)).shape[:2] == (h, w) for m in masks)
