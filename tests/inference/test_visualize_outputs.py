"""PCA pictures, overlays, mp4 writing, and the output layout's writers/readers."""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch

from inference.outputs import LEVELS, OutputLayout, read_depth, read_fields, write_depth, write_fields
from inference.visualize import (
    Mp4Writer,
    PCAProjector,
    heatmap_rgb,
    load_png,
    overlay,
    save_png,
    to_uint8_image,
)


def test_pca_projector_consistent_and_separates_regions():
    f = np.zeros((5, 8, 8), np.float32)
    f[:, :, :4] = np.array([1, 0, 0, 0, 0])[:, None, None]
    f[:, :, 4:] = np.array([0, 1, 0, 0, 1])[:, None, None]
    f += np.random.default_rng(0).normal(scale=0.01, size=f.shape).astype(np.float32)
    pca = PCAProjector.fit(f)
    img = pca(f)
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    left, right = img[:, :4].reshape(-1, 3).mean(0), img[:, 4:].reshape(-1, 3).mean(0)
    assert np.abs(left - right).max() > 100  # the two regions get clearly different colours
    again = PCAProjector.from_dict(json.loads(json.dumps(pca.to_dict())))
    np.testing.assert_array_equal(again(torch.from_numpy(f)), img)


def test_overlay_heatmap_and_png(tmp_path):
    rgb = np.full((16, 16, 3), 100, np.uint8)
    heat = np.zeros((16, 16), np.float32)
    heat[4:12, 4:12] = 1.0
    mask = heat > 0.5
    out = overlay(rgb, heat, mask)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out[0, 0] == 100).all() and not (out[8, 8] == 100).all()
    assert heatmap_rgb(np.array([[0.0, 1.0]])).shape == (1, 2, 3)
    save_png(tmp_path / "a" / "x.png", out)
    np.testing.assert_array_equal(load_png(tmp_path / "a" / "x.png"), out)
    assert to_uint8_image(torch.ones(3, 2, 5)).shape == (2, 5, 3)


def test_mp4_writer(tmp_path):
    with Mp4Writer(tmp_path / "v.mp4", fps=5) as w:
        for i in range(4):
            w.write(np.full((24, 32, 3), i * 50, np.uint8))
        w.write(np.zeros((12, 16, 3), np.uint8))  # resized to the first frame's size
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 32
    cap.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_layout_fields_and_depth_roundtrip(tmp_path):
    lay = OutputLayout(tmp_path)
    fields = {lvl: torch.randn(3, 6, 7) for lvl in LEVELS}
    valid = torch.ones(6, 7, dtype=torch.bool)
    meta = {"frame_key": "000001", "frame_index": 0, "lang_dim": 3, "autoencoder": None}
    assert not lay.frame_done("000001", geometry=False, rgb=False, pca=False)
    write_fields(lay.fields("000001"), fields, meta, valid)
    assert lay.frame_done("000001", geometry=False, rgb=False, pca=False)
    assert not lay.frame_done("000001")
    back, m = read_fields(lay.fields("000001"))
    assert m == meta and set(back) == {*LEVELS, "valid"}
    torch.testing.assert_close(back["small"], fields["small"])
    only, _ = read_fields(lay.fields("000001"), names=("large",))
    assert set(only) == {"large"}
    ext = np.hstack([np.eye(3), np.ones((3, 1))])
    write_depth(lay.depth("000001"), torch.rand(6, 7), torch.rand(6, 7) + 1, valid, ext, np.eye(3), meta)
    d, _ = read_depth(lay.depth("000001"))
    assert d["extrinsics"].shape == (3, 4) and d["depth"].shape == (6, 7)
    assert lay.field_keys() == ["000001"]


def test_pictures_carry_their_query_text_level_and_colour_bar():
    from inference.visualize import annotate

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    a = annotate(img, "red ball | small level")
    b = annotate(img, "green box | large level")
    plain = annotate(img, "", colorbar=False)
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(plain, img)  # nothing drawn without a title or a colour bar
    top_left = (slice(0, 20), slice(0, 120))
    assert not np.array_equal(a[top_left], img[top_left])  # the text is there ...
    assert not np.array_equal(a[top_left], b[top_left])  # ... and it is this query's text
    right = (slice(40, 110), slice(190, 200))
    assert not np.array_equal(a[right], img[right])  # the colour bar
    bar = a[40:110, 193]
    assert bar[0].tolist() != bar[-1].tolist()  # a ramp, not a flat patch
    assert np.array_equal(annotate(img, "x", colorbar=False)[60:, :], img[60:, :])  # only the label is drawn
