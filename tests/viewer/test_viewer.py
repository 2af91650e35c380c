"""The viewer's scene, built in-process on a small synthetic inference output: points, frustums, controls, queries
(compared with ``eval.query``'s masks), time, recordings."""

from __future__ import annotations

import inspect
import json
import logging

import numpy as np
import pytest

from inference.geometry import project_points
from inference.outputs import OutputLayout, read_depth
from inference.visualize import load_png
from tests.viewer.conftest import DEGENERATE, FRAMES, viewer_args


def expected_count(layout: OutputLayout, key: str, budget: int, percentile: float) -> int:
    """Points a frame shows, from its depth file alone: valid, finite, positive depth, confidence at or above the
    frame's percentile, at most the budget."""
    d, _ = read_depth(layout.depth(key))
    depth, conf = d["depth"].numpy(), d["conf"].numpy()
    ok = d["valid"].numpy().astype(bool) & np.isfinite(depth) & (depth > 0) & np.isfinite(conf)
    thr = np.percentile(conf[ok], percentile) if percentile > 0 else -np.inf
    return int(min(budget, (ok & (conf >= thr)).sum()))


def test_scene_points_frustums_and_controls(viewer, viewer_output, caplog):
    server, v = viewer
    layout = OutputLayout(viewer_output["out"])
    keys = layout.field_keys()
    bad = {keys[i] for i in DEGENERATE}
    good = [k for k in keys if k not in bad]
    assert len(keys) == FRAMES and v.scene.keys == keys
    # the non-finite cameras: skipped (no points, no frustum), counted, never a crash
    assert set(v.scene.skipped_cameras) == bad
    assert set(v.clouds) == set(good) and set(v.frustums) == set(good)
    cams = json.loads(layout.cameras.read_text())["frames"]
    assert any(c["intrinsics"][0][0] is None for c in cams)  # cameras.json really holds the nulls
    budget, pct = int(v.gui_budget.value), float(v.gui_conf.value)
    for key in good:
        cloud, cam = v.clouds[key], v.scene.cameras[key]
        n = expected_count(layout, key, budget, pct)
        assert n > 100 and cloud.points.shape == (n, 3) and cloud.colors.shape == (n, 3)
        # RGB colours: the frame's picture at each point's pixel, and each point lies on that pixel's ray
        pix = v.scene.points[key].pix[v.selection[key]]
        rgb = v.pictures.rgb(key, v.scene.hw[key])
        assert np.array_equal(cloud.colors, rgb[pix[:, 0], pix[:, 1]])
        uv, z = project_points(v.scene.points[key].xyz[v.selection[key]], cam.intrinsics, cam.extrinsics)
        assert (z > 0).all()
        assert np.mean(np.floor(uv[:, ::-1]).astype(int) == pix) > 0.99
        np.testing.assert_allclose(v.frustums[key].position, cam.center, atol=1e-5)
    # controls
    assert v.gui_frame.max == FRAMES - 1 and v.gui_frame.value == 0
    assert v.gui_play.value is False and v.gui_speed.value == 10.0
    assert list(v.gui_level.options) == ["auto", "small", "middle", "large"] and v.gui_level.value == "auto"
    assert v.gui_threshold.value == pytest.approx(0.4)
    assert set(v.gui_color.options) == {"rgb", "pca small", "pca middle", "pca large", "relevancy"}
    assert "query" in v.gui_panel_mode.options and v.gui_image.image.ndim == 3
    assert not v.gui_add.disabled and not v.gui_state.disabled  # the decoder has a video head
    assert v.trajectory is not None and v.trajectory.points.shape == (len(good) - 1, 2, 3)


def test_degenerate_cameras_are_counted_in_a_warning(viewer_output, caplog):
    from inference.outputs import OutputLayout
    from viewer.scene import load_scene

    with caplog.at_level(logging.WARNING, logger="viewer"):
        scene = load_scene(OutputLayout(viewer_output["out"]))
    assert f"1 of {FRAMES} frames have a non-finite or degenerate camera" in caplog.text
    assert len(scene.points) == FRAMES - 1


def test_budget_confidence_frames_and_fused(viewer, viewer_output):
    server, v = viewer
    layout = OutputLayout(viewer_output["out"])
    key = v.scene.keys[0]
    v.gui_budget.value = 500
    assert len(v.clouds[key].points) == expected_count(layout, key, 500, v.gui_conf.value) == 500
    v.gui_budget.value = v.gui_budget.max
    v.gui_conf.value = 60.0
    assert len(v.clouds[key].points) == expected_count(layout, key, v.gui_budget.max, 60.0)
    v.gui_frame.value = 2
    cur = v.scene.keys[2]
    assert v.frame == 2 and [k for k, h in v.clouds.items() if h.visible] == [cur]
    assert tuple(v.frustums[cur].color) == (255, 120, 0)
    assert v.frustums[cur].image is not None and v.frustums[key].image is None
    v.gui_fused.value = True
    assert all(h.visible for h in v.clouds.values())


def test_query_recolours_exactly_the_points_in_its_mask(viewer_output, tmp_path):
    """A query through the viewer's own callback: the shown points inside the query's mask (the mask eval.query
    writes for the same frames, text, level and threshold) take its colour, every other point keeps its colour;
    with level and threshold changed, the same again."""
    from eval.query import query_fields, slug
    from eval.query.decode import autoencoder_decoder
    from model.text import HashTextEncoder
    from viewer.app import start

    out = viewer_output["out"]
    layout = OutputLayout(out)
    grid = "exact" in inspect.signature(query_fields).parameters  # eval.query with the latent grid (its default)
    server, v = start(viewer_args(viewer_output, *([] if grid else ["--exact"])), port=0)
    try:
        before = {k: np.array(h.colors) for k, h in v.clouds.items()}
        encode = HashTextEncoder(seed=0).encode_text
        decode = autoencoder_decoder(layout.autoencoder())
        # texts whose masks are not empty under this random decoder on the 3D scene (the check needs points inside)
        for text, level, thr in (("yellow duck", "auto", 0.4), ("green box", "middle", 0.55)):
            v.gui_level.value, v.gui_threshold.value = level, thr
            v.gui_text.value = text
            v.submit_query(wait=True)
            q = v.queries[-1]
            ref = query_fields(out, [text], tmp_path / slug(text), encode, decode, level=level, threshold=thr,
                               video=False, ply=False)
            inside = 0
            for key in v.scene.keys:
                ref_mask = load_png(tmp_path / slug(text) / slug(text) / "mask" / f"{key}.png") > 0
                fr = q.result.frames[key]
                assert np.array_equal(fr.mask, ref_mask), key
                assert v.scene.levels[fr.level] == ref[text]["frames"][key]["level"]
                if key not in v.clouds:
                    continue
                pix = v.scene.points[key].pix[v.selection[key]]
                in_mask = ref_mask[pix[:, 0], pix[:, 1]]
                earlier = np.zeros(len(pix), bool)
                for other in v.queries[:-1]:
                    earlier |= other.result.frames[key].mask[pix[:, 0], pix[:, 1]]
                colors = np.array(v.clouds[key].colors)
                assert (colors[in_mask] == q.color).all(), key
                untouched = ~in_mask & ~earlier
                assert np.array_equal(colors[untouched], before[key][untouched]), key
                inside += int(in_mask.sum())
            assert inside > 0, f"{text!r}: no shown point in any mask, the check is empty"
        # hiding the queries gives back the original colours exactly
        for q in list(v.queries):
            q.handles[0].value = False
        for key, h in v.clouds.items():
            assert np.array_equal(np.array(h.colors), before[key])
    finally:
        v.close()
        server.stop()


def test_time_sensitive_query_marks_the_timeline(viewer):
    from eval.protocol.metrics import temporal_predictions

    server, v = viewer
    v.submit_query("open box", state=True, wait=True)
    res = v.queries[-1].result
    scores = np.array([res.state_scores[k] for k in v.scene.keys], dtype=np.float32)
    assert np.isfinite(scores).all() and scores.any()
    holds = temporal_predictions(scores)
    assert [res.state_holds[k] for k in v.scene.keys] == holds.tolist()
    assert 0 < holds.sum() < FRAMES
    assert f"state holds in {int(holds.sum())} / {FRAMES} frames" in v.gui_timeline.content
    assert v.gui_timeline.content.count("#ff00ff") == int(holds.sum())  # the query's colour, one cell per frame


def test_recordings(viewer, tmp_path):
    import msgspec
    import zstandard

    from viewer.record import save_recording

    server, v = viewer
    v.submit_query("red ball", wait=True)
    viser_file, html_file = save_recording(v, [tmp_path / "r.viser", tmp_path / "r.html"], fps=5)
    raw = viser_file.read_bytes()
    inner = zstandard.ZstdDecompressor().decompress(raw[8:], max_output_size=int.from_bytes(raw[:8], "little"))
    n = int.from_bytes(inner[:8], "little")
    rec = msgspec.msgpack.decode(inner[8:8 + n])
    assert rec["durationSeconds"] == pytest.approx(FRAMES / 5)
    names = {m[1].get("name") for m in rec["messages"] if isinstance(m[1], dict)}
    assert {f"/points/{k}" for k in v.clouds} <= names and {f"/cameras/{k}" for k in v.frustums} <= names
    page = html_file.read_text()
    assert "__VISER_EMBED_DATA__" in page and page.lstrip().lower().startswith("<!doctype html")
    assert v.frame == 0  # the view is back where it was
