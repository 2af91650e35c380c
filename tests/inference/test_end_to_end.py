"""End to end on a synthetic scene: make the scene, oracle targets (tiny CLIP), autoencoder, tiny-backbone
tokens, a briefly trained tiny decoder; then ``bash scripts/infer.sh`` on CPU and ``eval.query``.

Checks the output layout and shapes, reads the fused PLY back (vertex count = sum of the per-frame clouds,
colours = the frame pixels), the camera poses (3x4 with a valid rotation, intrinsics at the original
resolution), and reports the IoU of text-query masks against the scene's COCO ground truth:

* for the briefly trained decoder (a few steps, so it is reported, not required to be good);
* for oracle fields (the autoencoded training targets themselves) through the same query code, which
  must beat the trivial whole-frame baseline by a wide margin (the protocol is right end to end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from inference.geometry import is_rotation
from inference.outputs import LEVELS, OutputLayout, read_depth, read_fields, write_fields
from inference.ply import read_ply
from inference.visualize import load_png
from tests.conftest import REPO_ROOT
from tests.limits import HANG_GUARD_S

pytestmark = pytest.mark.slow
W, H, N = 84, 56, 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from preprocess import extract_semantics, extract_tokens, make_synthetic, train_autoencoder
    from training.trainer import main as train_main

    root = tmp_path_factory.mktemp("e2e")
    scene = root / "scene"
    torch.manual_seed(0)
    make_synthetic.main(["--out", str(scene), "--frames", str(N), "--width", str(W), "--height", str(H),
                         "--no-progress"])
    extract_semantics.main(["--scene", str(scene), "--mode", "oracle", "--clip", "tiny", "--device", "cpu",
                            "--no-video"])
    train_autoencoder.main(["--scenes", str(scene), "--features", "clip_features", "--dim", "3", "--epochs", "1",
                            "--out", str(root / "ae"), "--device", "cpu"])
    extract_tokens.main([str(scene), "--backbone", "tiny", "--target-width", str(W), "--device", "cpu",
                         "--no-progress"])
    train_main(["--scenes", str(scene), "--decoder", "tiny", "--epochs", "3", "--batch-size", "2", "--lr", "3e-3",
                "--warmup-epochs", "1", "--out", str(root / "run"), "--device", "cpu", "--no-progress",
                "--save-every", "3", "--no-val", "--no-video"])
    out = root / "out"
    env = dict(os.environ, PYTHON=sys.executable, DECODER=str(root / "run"), BACKBONE="tiny",
               AUTOENCODER=str(root / "ae"), DEVICE="cpu", CHUNK="4", VIDEO="1")
    r = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "infer.sh"), str(scene), str(out), "--",
                        "--point-stride", "1", "--conf-percentile", "20", "-q"],
                       env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"root": root, "scene": scene, "out": out, "summary": json.loads(r.stdout[r.stdout.index("{"):])}


def test_infer_sh_layout_shapes_ply_cameras(trained):
    out, scene = trained["out"], trained["scene"]
    lay = OutputLayout(out)
    keys = [f"{i:06d}" for i in range(1, N + 1)]
    meta = json.loads(lay.meta.read_text())
    assert meta["frames"] == keys and meta["lang_dim"] == 3 and (meta["height"], meta["width"]) == (H, W)
    assert trained["summary"]["written"] == N
    for i, key in enumerate(keys):
        f, m = read_fields(lay.fields(key))
        assert m["frame_index"] == i and m["autoencoder"] == "autoencoder"  # the copy inside the output folder
        for lvl in LEVELS:
            assert f[lvl].shape == (3, H, W) and f[lvl].dtype == torch.float32 and torch.isfinite(f[lvl]).all()
        assert load_png(lay.rgb(key)).shape == (H, W, 3)
        assert all(load_png(lay.pca(lvl, key)).shape == (H, W, 3) for lvl in LEVELS)
        d, _ = read_depth(lay.depth(key))
        assert d["depth"].shape == (H, W) and (d["conf"] >= 1).all()
        pic = load_png(lay.depth_png(key))  # the depth picture beside RGB and PCA: not blank
        assert pic.shape == (H, W, 3) and len(np.unique(pic.reshape(-1, 3), axis=0)) > 10
    assert all(lay.video(n).stat().st_size > 0 for n in ("rgb", "pca_small"))
    from model.autoencoder import FeatureAutoencoder
    copy, original = FeatureAutoencoder.load(lay.autoencoder()), FeatureAutoencoder.load(trained["root"] / "ae")
    assert lay.autoencoder() == out / "autoencoder" and all(
        torch.equal(a, b) for a, b in zip(copy.state_dict().values(), original.state_dict().values(), strict=True))
    # cameras: OpenCV camera-from-world 3x4 with a proper rotation, intrinsics for the original frames
    cams = json.loads(lay.cameras.read_text())["frames"]
    assert [c["key"] for c in cams] == keys
    for c in cams:
        E, K = np.array(c["extrinsics"]), np.array(c["intrinsics"])
        assert E.shape == (3, 4) and K.shape == (3, 3) and is_rotation(E[:, :3], atol=1e-4)
        assert (c["height"], c["width"]) == (H, W) and K[0, 0] > 0 and K[1, 1] > 0
        np.testing.assert_allclose(K[:2, 2], [W / 2, H / 2], atol=1.0)  # crop mode keeps the centre
    # fused PLY: every per-frame cloud, colours = the frames' pixels
    fused = read_ply(lay.fused)
    per_frame = [read_ply(lay.points(k)) for k in keys]
    assert len(fused["xyz"]) == sum(len(p["xyz"]) for p in per_frame) == trained["summary"]["fused_points"]
    assert 0.7 * H * W <= len(per_frame[0]["xyz"]) <= 0.8 * H * W + 1  # 20% lowest confidence dropped
    frame0 = load_png(scene / "rgb" / "2x" / "000001.png")
    palette = {tuple(c) for c in frame0.reshape(-1, 3)}
    assert all(tuple(c) in palette for c in per_frame[0]["rgb"][:200])
    np.testing.assert_array_equal(fused["rgb"][: len(per_frame[0]["rgb"])], per_frame[0]["rgb"])


def _ious(scene, qout, names):
    from eval.protocol.metrics import mask_iou
    from eval.query import slug
    from preprocess.annotations import load_coco_masks

    coco = load_coco_masks(scene)
    res = {}
    for name in names:
        ious, base = [], []
        for idx in coco.frame_indices:
            if name in coco.masks[idx]:
                pred = load_png(qout / slug(name) / "mask" / f"{idx + 1:06d}.png") > 127
                ious.append(mask_iou(pred, coco.masks[idx][name]))
                base.append(mask_iou(np.ones_like(pred), coco.masks[idx][name]))
        res[name] = (float(np.mean(ious)), float(np.mean(base)))
    return res


def test_query_iou_trained_and_oracle(trained, capsys):
    from eval.query import query_fields
    from eval.query.decode import autoencoder_decoder
    from model.text import build_text_encoder
    from utils.io import load_npy

    scene, root = trained["scene"], trained["root"]
    names = ["checkered tablecloth", "green box"]
    encode = build_text_encoder("tiny", device="cpu").encode_text  # the encoder the oracle targets were made with
    query_fields(trained["out"], names, root / "q", encode, autoencoder_decoder(root / "ae"), video=False, ply=False)
    trained_iou = _ious(scene, root / "q", names)
    # oracle fields: the 512-d training targets themselves, through the same files and query code
    lay = OutputLayout(root / "oracle")
    feat = scene / "clip_features"
    for p in sorted(feat.glob("*_s.npy")):
        key = p.name[:-6]
        seg, rows = load_npy(p).astype(int), load_npy(feat / f"{key}_f.npy")
        fields = {lvl: torch.from_numpy(np.where(seg[i + 1, ..., None] >= 0, rows[np.maximum(seg[i + 1], 0)], 0.0))
                  .permute(2, 0, 1).float() for i, lvl in enumerate(LEVELS)}
        write_fields(lay.fields(key), fields, {"frame_key": key})
    query_fields(lay.root, names, root / "qo", encode, None, video=False, ply=False)
    oracle_iou = _ious(scene, root / "qo", names)
    with capsys.disabled():
        print(f"\n[inference e2e] query IoU (mean over annotated frames, whole-frame baseline): "
              f"decoder trained 3 epochs {trained_iou}; oracle fields {oracle_iou}")
    for name in names:
        iou, base = trained_iou[name]
        assert 0.0 <= iou <= 1.0  # reported only: a few CPU steps do not train the decoder
        o_iou, base = oracle_iou[name]
        assert o_iou > base + 0.1, (name, o_iou, base)
