"""The synthetic dynamic-scene generator: determinism, exact annotations, state timeline, safe writes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from preprocess import make_synthetic
from preprocess.annotations import polygon_to_mask
from preprocess.make_synthetic import SyntheticConfig, generate_synthetic_scene
from preprocess.synthetic import annotations as synth_annotations

SMALL = SyntheticConfig(frames=12, width=96, height=72, objects=5, seed=3)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    return generate_synthetic_scene(tmp_path_factory.mktemp("syn") / "scene", SMALL, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(scene, tmp_path):
    again = generate_synthetic_scene(tmp_path / "again", SMALL, progress=False)
    assert _files(again) == _files(scene)
    other = generate_synthetic_scene(tmp_path / "other", SyntheticConfig(**{**SMALL.to_dict(), "seed": 4}),
                                     progress=False)
    assert _files(other)["rgb/2x/000001.png"] != _files(scene)["rgb/2x/000001.png"]


def test_layout_and_default_size_not_multiple_of_14(scene):
    keys = [p.stem for p in sorted((scene / "rgb" / "2x").glob("*.png"))]
    assert keys == [f"{i:06d}" for i in range(1, SMALL.frames + 1)]
    img = cv2.imread(str(scene / "rgb" / "2x" / "000001.png"))
    assert img.shape == (SMALL.height, SMALL.width, 3)
    labels = np.load(scene / "gt" / "labels" / "000001.npy", allow_pickle=False)
    assert labels.dtype == np.int32 and labels.shape == (3, SMALL.height, SMALL.width)
    d = SyntheticConfig()
    assert d.width % 14 and d.height % 14 and 4 <= d.objects <= 6 and d.frames == 64


def test_coco_polygons_rasterise_onto_their_objects(scene):
    names = json.loads((scene / "gt" / "names.json").read_text())
    coco = json.loads((scene / "annotations" / "train" / "_annotations.coco.json").read_text())
    large_id = {r["name"]: r["id"] for r in names["regions"] if r["level"] == "large"}
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert set(cats.values()) <= set(names["objects"])
    frames = [int(im["file_name"].split("_")[0]) - 1 for im in coco["images"]]
    assert frames == names["eval_frames"] == list(range(2, SMALL.frames, 4))
    checked = 0
    for im, t in zip(coco["images"], frames, strict=True):
        gt = np.load(scene / "gt" / "labels" / f"{t + 1:06d}.npy", allow_pickle=False)[2]
        by_cat: dict[str, np.ndarray] = {}
        for ann in (a for a in coco["annotations"] if a["image_id"] == im["id"]):
            # rasterised exactly as the evaluator (and the published protocol) does: segmentation[0], fillPoly
            m = polygon_to_mask(ann["segmentation"][0], im["height"], im["width"])
            name = cats[ann["category_id"]]
            by_cat[name] = by_cat.get(name, np.zeros_like(m)) | m
        for name, pred in by_cat.items():
            truth = gt == large_id[name]
            iou = (pred & truth).sum() / max((pred | truth).sum(), 1)
            assert iou >= 0.95, (t, name, iou)
            checked += 1
    assert checked >= len(frames) * 3


def test_video_annotations_match_state_timeline(scene):
    video = json.loads((scene / "annotations" / "video_annotations.json").read_text())
    names = json.loads((scene / "gt" / "names.json").read_text())
    tracks = json.loads((scene / "gt" / "frames.json").read_text())["frames"]
    assert len(video) >= 2  # at least two objects change state
    for obj, states in video.items():
        assert {s["caption"]: s["intervals"] for s in names["states"][obj]} == states
        assert len(states) >= 2
        for t in range(SMALL.frames):
            inside = [cap for cap, ivs in states.items() if any(lo <= t <= hi for lo, hi in ivs)]
            assert inside == [tracks[t]["states"][obj]], (obj, t)


def test_levels_differ_for_objects_with_parts(scene):
    labels = np.stack([np.load(p, allow_pickle=False) for p in sorted((scene / "gt" / "labels").glob("*.npy"))])
    assert (labels >= 0).mean() > 0.99  # the tablecloth covers the background
    assert (labels[:, 0] != labels[:, 2]).any() and (labels[:, 1] != labels[:, 2]).any()
    names = json.loads((scene / "gt" / "names.json").read_text())
    levels_of = {}
    for r in names["regions"]:
        levels_of.setdefault(r["object"], set()).add(r["name"])
    assert any(len(v) > 1 for v in levels_of.values())  # some objects have named parts


def test_mask_polygon_round_trip_helper():
    mask = np.zeros((40, 50), bool)
    mask[5:30, 10:40] = True
    mask[12:20, 20:28] = False  # a hole
    polys = synth_annotations.mask_to_polygons(mask)
    back = synth_annotations.rasterize_polygons(polys, 40, 50)
    assert (back == mask).mean() > 0.97


def test_existing_output_and_bad_flags_are_refused(tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(SystemExit):
        make_synthetic.main(["--out", str(out), "--frames", "4", "--no-progress"])
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    with pytest.raises(SystemExit):
        make_synthetic.main(["--out", str(tmp_path / "x"), "--objects", "9"])
    assert "--objects" in capsys.readouterr().err


def test_failure_leaves_no_half_written_scene(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = make_synthetic.render_frame

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(make_synthetic, "render_frame", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_synthetic_scene(tmp_path / "scene", SMALL, progress=False)
    assert list(tmp_path.iterdir()) == []
