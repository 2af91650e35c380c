"""Synthetic scene generator: determinism, exact polygons, state intervals, levels, safe output handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from preprocess import make_synthetic
from preprocess.synthetic import SyntheticConfig, SyntheticConfigError, build_scene, rasterize_polygons
from utils.io import load_npy

SMALL = SyntheticConfig(frames=12, width=90, height=70, objects=6, seed=3)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    return make_synthetic.generate_synthetic_scene(tmp_path_factory.mktemp("a") / "s", SMALL, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_byte_identical_and_other_seed_differs(scene_dir, tmp_path):
    again = make_synthetic.generate_synthetic_scene(tmp_path / "b", SMALL, progress=False)
    assert _files(scene_dir) == _files(again)
    other = make_synthetic.generate_synthetic_scene(tmp_path / "c", SyntheticConfig(**{**SMALL.to_dict(), "seed": 4}),
                                                    progress=False)
    assert _files(other)["rgb/2x/000001.png"] != _files(scene_dir)["rgb/2x/000001.png"]


def test_layout_and_coco_polygons_match_gt(scene_dir):
    assert len(list((scene_dir / "rgb" / "2x").glob("*.png"))) == SMALL.frames
    coco = json.loads((scene_dir / "annotations/train/_annotations.coco.json").read_text())
    names = json.loads((scene_dir / "gt/names.json").read_text())
    frames = [int(im["file_name"].split("_")[0]) - 1 for im in coco["images"]]
    assert frames == names["eval_frames"] == list(range(2, SMALL.frames, 4))
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    large = {r["object"]: r["id"] for r in names["regions"] if r["level"] == "large"}
    checked = 0
    for im, t in zip(coco["images"], frames, strict=True):
        labels = load_npy(scene_dir / "gt/labels" / f"{t + 1:06d}.npy")
        assert labels.dtype == np.int32 and labels.shape == (3, SMALL.height, SMALL.width)
        for cid, name in cats.items():
            polys = [a["segmentation"][0] for a in coco["annotations"]
                     if a["image_id"] == im["id"] and a["category_id"] == cid]
            gt = labels[2] == large[name]
            if not gt.any():
                assert not polys
                continue
            pred = rasterize_polygons(polys, im["height"], im["width"])
            iou = (pred & gt).sum() / (pred | gt).sum()
            assert iou >= 0.95, (t, name, iou)
            checked += 1
    assert checked >= 3 * len(frames)


def test_video_annotations_match_timeline_and_pixels(scene_dir):
    scene = build_scene(SMALL)
    video = json.loads((scene_dir / "annotations/video_annotations.json").read_text())
    timeline = scene.state_timeline()
    assert set(video) == set(timeline) == {"green box", "glass"}
    for obj, caps in video.items():
        assert len(caps) == 2
        for cap, ivs in caps.items():
            frames = [t for lo, hi in ivs for t in range(lo, hi + 1)]
            assert frames == [t for t, c in enumerate(timeline[obj]) if c == cap]
    juice = scene.region_id("small", "glass", "orange juice")
    for t, cap in enumerate(timeline["glass"]):
        n = (load_npy(scene_dir / "gt/labels" / f"{t + 1:06d}.npy")[0] == juice).sum()
        if cap == "empty glass" and scene.state_value(scene.objects[1], t) == 0:
            assert n == 0


def test_levels_differ_and_regions_global(scene_dir):
    names = json.loads((scene_dir / "gt/names.json").read_text())
    assert [r["id"] for r in names["regions"]] == list(range(len(names["regions"])))
    labels = np.stack([load_npy(p) for p in sorted((scene_dir / "gt/labels").glob("*.npy"))])
    assert not np.array_equal(labels[:, 0], labels[:, 1]) and not np.array_equal(labels[:, 1], labels[:, 2])
    assert (labels == -1).mean() < 0.01
    level_of = {r["id"]: r["level"] for r in names["regions"]}
    for li, level in enumerate(names["levels"]):
        assert {level_of[int(i)] for i in np.unique(labels[:, li])} == {level}


def test_default_size_not_multiple_of_14():
    c = SyntheticConfig()
    assert c.width % 14 and c.height % 14 and c.frames == 64


def test_bad_flags_and_existing_output(tmp_path, capsys):
    with pytest.raises(SystemExit):
        make_synthetic.main(["--out", str(tmp_path / "x"), "--objects", "9"])
    assert "--objects" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SyntheticConfigError):
        SyntheticConfig(frames=2).validate()
    out = tmp_path / "y"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        make_synthetic.main(["--out", str(out), "--frames", "4", "--no-progress"])
    assert (out / "keep.txt").read_text() == "mine"
    make_synthetic.main(["--out", str(out), "--frames", "4", "--width", "40", "--height", "34", "--no-progress",
                         "--overwrite"])
    assert not (out / "keep.txt").exists() and (out / "gt/names.json").exists()


def test_failure_leaves_no_output(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = make_synthetic.render_frame

    def boom(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(make_synthetic, "render_frame", boom)
    with pytest.raises(RuntimeError):
        make_synthetic.generate_synthetic_scene(tmp_path / "z", SMALL, progress=False)
    assert list(tmp_path.iterdir()) == []
