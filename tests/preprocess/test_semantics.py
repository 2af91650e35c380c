"""Semantic targets in the 4D LangSplat format: levels, crops, oracle, clip mode, bad input, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.clip import ClipEncoder
from preprocess import extract_semantics as es
from preprocess.semantics.crops import pad_to_square, region_crops
from preprocess.semantics.levels import assemble, compact, pool_levels, split_levels
from preprocess.semantics.proposals import PrecomputedProposer, SkimageProposer, masks_to_level_map
from preprocess.semantics.scene import GroundTruth, SemanticsInputError
from tests.preprocess.semantics_fixture import make_scene, synthetic_scene


@pytest.fixture(scope="module")
def enc() -> ClipEncoder:
    return ClipEncoder.tiny(seed=0)


@pytest.fixture(scope="module")
def oracle_scene(tmp_path_factory, enc):
    scene = synthetic_scene(tmp_path_factory.mktemp("oracle") / "scene")
    es.extract_oracle(scene, enc)
    return scene


# ---------------------------------------------------------------------- pure helpers
def test_pool_compact_assemble_offsets():
    small = np.array([[5, -1], [-1, -1]])
    middle = np.array([[7, 7], [-1, -1]])
    large = np.array([[9, 9], [9, -1]])
    pooled = pool_levels(small, middle, large)
    assert pooled.tolist() == [[5, 7], [9, -1]]  # finest region wins
    maps, ids = zip(*(compact(m) for m in (pooled, small, middle, large)), strict=True)
    assert ids[0].tolist() == [5, 7, 9] and maps[0].tolist() == [[0, 1], [2, -1]]
    feats = [np.eye(4, dtype=np.float32)[: len(i)] for i in ids]
    s, f = assemble(maps, feats)
    assert s.dtype == np.float32 and s.shape == (4, 2, 2) and f.shape == (6, 4)
    assert s[1].tolist() == [[3, -1], [-1, -1]]  # small offset by 3 default rows
    assert s[2].tolist() == [[4, 4], [-1, -1]]
    assert s[3].tolist() == [[5, 5], [5, -1]]
    for lvl, m in enumerate(split_levels(s)):
        assert np.array_equal(m, maps[lvl])
    with pytest.raises(ValueError, match="cover"):
        assemble([np.array([[0, 2]])], [np.zeros((3, 4), np.float32)])  # index 1 unused


def test_region_crops_follow_published_recipe():
    img = np.full((10, 12, 3), 200, np.uint8)
    lab = np.full((10, 12), -1)
    lab[2:6, 3:11] = 0  # 4 x 8 region -> box excludes the last row/col -> 3 x 7 crop
    lab[0:10, 0] = 1  # one pixel wide -> zero-width box -> dropped
    img[2:6, 3:11] = (10, 20, 30)
    kept, crops = region_crops(img, lab, size=14)
    assert kept.tolist() == [0] and crops.shape == (1, 14, 14, 3) and crops.dtype == np.uint8
    sq = pad_to_square(np.ones((3, 7, 3), np.uint8))
    assert sq.shape == (7, 7, 3) and sq[:2].sum() == 0 and sq[2:5].all() and sq[5:].sum() == 0
    # the crop is the region colour in the middle band and black padding above/below
    assert (crops[0, 7] == (10, 20, 30)).all() and crops[0, 0].sum() == 0


def test_masks_to_level_map_smaller_wins_and_dedup():
    big = np.zeros((6, 6), bool)
    big[:, :] = True
    small = np.zeros((6, 6), bool)
    small[:2, :2] = True
    dup = big.copy()
    dup[0, 0] = False
    low = small.copy()
    out = masks_to_level_map(np.stack([big, small, dup, low]), np.array([0.95, 0.9, 0.93, 0.5]))
    assert out[0, 0] != out[5, 5] and (out >= 0).all()
    assert len(np.unique(out)) == 2  # duplicate and low-score masks removed


# ---------------------------------------------------------------------- oracle
def test_oracle_format_and_exact_labels(oracle_scene, enc):
    gt = GroundTruth.load(oracle_scene)
    meta = json.loads((oracle_scene / "clip_features" / "meta.json").read_text())
    keys = sorted(p.stem for p in (oracle_scene / "rgb" / "2x").glob("*.png"))
    assert meta["frames"] == keys and meta["levels"] == ["default", "small", "middle", "large"]
    for key in keys:
        s = np.load(oracle_scene / "clip_features" / f"{key}_s.npy", allow_pickle=False)
        f = np.load(oracle_scene / "clip_features" / f"{key}_f.npy", allow_pickle=False)
        lab = np.load(oracle_scene / "gt" / "labels" / f"{key}.npy")
        assert s.dtype == np.float32 and s.shape == (4, *lab.shape[1:])
        assert f.dtype == np.float32 and f.shape[1] == enc.embed_dim
        assert np.allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
        rows = meta["rows"][key]
        counts = [len(r) for r in rows]
        assert f.shape[0] == sum(counts)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        row_ids = np.array(sum(rows, []))
        pooled = pool_levels(lab[0], lab[1], lab[2])
        for lvl, truth in enumerate([pooled, lab[0], lab[1], lab[2]]):
            plane = s[lvl]
            assert np.array_equal(plane == -1, truth == -1)
            vals = plane[plane >= 0].astype(int)
            assert vals.min() >= offsets[lvl] and vals.max() < offsets[lvl + 1]  # level offsets
            assert set(vals.tolist()) == set(range(offsets[lvl], offsets[lvl + 1]))
            recovered = np.full(plane.shape, -1)
            recovered[plane >= 0] = row_ids[vals]
            assert np.array_equal(recovered, truth)  # exact ground-truth label map
        names = [gt.regions[int(i)]["name"] for i in row_ids]
        assert np.allclose(f, enc.encode_text(names).numpy(), atol=1e-5)


def test_oracle_video_features(oracle_scene, enc):
    gt = GroundTruth.load(oracle_scene)
    vd = oracle_scene / "video_features"
    keys = sorted(p.stem for p in (oracle_scene / "rgb" / "2x").glob("*.png"))
    obj_of = {rid: gt.objects.index(r["object"]) for rid, r in gt.regions.items()}
    state_rows = 0
    for t, key in enumerate(keys):
        s = np.load(vd / f"{key}_s.npy")
        f = np.load(vd / f"{key}_f.npy")
        lab = np.load(oracle_scene / "gt" / "labels" / f"{key}.npy")
        assert s.shape == (1, *lab.shape[1:]) and s.dtype == np.float32
        assert f.shape == (len(gt.objects), enc.embed_dim) and f.dtype == np.float32
        expect = np.vectorize(lambda r: obj_of.get(int(r), -1))(lab[2])
        assert np.array_equal(s[0], expect)  # large-level object index, -1 background
        for i, obj in enumerate(gt.objects):
            caption = obj
            for st in gt.states.get(obj, []):
                if any(lo <= t <= hi for lo, hi in st["intervals"]):
                    caption = st["caption"]
            state_rows += caption != obj
            assert np.allclose(f[i], enc.encode_text([caption])[0].numpy(), atol=1e-5), (key, obj, caption)
    assert state_rows > 0  # some rows carry a state caption, not just the object name


# ---------------------------------------------------------------------- clip mode
def test_clip_mode_skimage_end_to_end(oracle_scene, enc):
    out = es.extract_clip(oracle_scene, enc, SkimageProposer(), output_name="clip_skimage")
    for p in sorted(out.glob("*_s.npy")):
        s = np.load(p)
        f = np.load(p.with_name(p.name.replace("_s.npy", "_f.npy")))
        assert s.shape == (4, 48, 64) and s.dtype == np.float32 and f.dtype == np.float32  # frames are 64x48
        assert f.shape[1] == enc.embed_dim and np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)
        used = np.unique(s[s >= 0]).astype(int)
        assert used.tolist() == list(range(f.shape[0]))  # every row used, one index space
        maxes = [s[lvl].max() for lvl in range(4)]
        assert all(a < b for a, b in zip(maxes, maxes[1:], strict=False))  # offsets grow with the level
    assert (oracle_scene / "clip_skimage" / "meta.json").is_file()
    assert not (oracle_scene / ".clip_skimage.partial").exists()


def test_clip_mode_precomputed_masks_keep_regions(oracle_scene, enc):
    out = es.extract_clip(oracle_scene, enc, PrecomputedProposer(oracle_scene / "clip_features"),
                          output_name="clip_pre", masks="precomputed")
    dropped = 0
    for p in sorted(out.glob("*_s.npy")):
        new, old = np.load(p), np.load(oracle_scene / "clip_features" / p.name)
        assert new.shape == old.shape
        for lvl in range(4):
            a, b = old[lvl], new[lvl]
            assert (a[b >= 0] >= 0).all()  # no new region pixels
            pairs = np.unique(np.stack([a[b >= 0], b[b >= 0]], 1), axis=0)
            assert len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))  # same partition
            for rid in np.setdiff1d(np.unique(a[a >= 0]), pairs[:, 0]):  # only degenerate-box regions dropped
                ys, xs = np.nonzero(a == rid)
                assert ys.max() == ys.min() or xs.max() == xs.min()
                assert (b[a == rid] == -1).all()
                dropped += 1
    assert dropped < 10


# ---------------------------------------------------------------------- bad input, no half-written output
def _assert_nothing_written(scene, name="clip_features"):
    assert not (scene / name).exists() and not (scene / f".{name}.partial").exists()


def test_missing_labels_and_wrong_size(tmp_path, enc):
    scene = make_scene(tmp_path / "a", frames=3)
    (scene / "gt" / "labels" / "000002.npy").unlink()
    with pytest.raises(SemanticsInputError, match="000002.npy"):
        es.extract_oracle(scene, enc)
    _assert_nothing_written(scene)
    np.save(scene / "gt" / "labels" / "000002.npy", np.zeros((3, 10, 10), np.int32))
    with pytest.raises(SemanticsInputError, match=r"shape \(3, 10, 10\)"):
        es.extract_oracle(scene, enc)
    _assert_nothing_written(scene)


def test_unreadable_frame_and_missing_frames(tmp_path, enc):
    scene = make_scene(tmp_path / "b", frames=3)
    (scene / "rgb" / "2x" / "000003.png").write_bytes(b"not a png")
    with pytest.raises(SemanticsInputError, match="000003.png"):
        es.extract_clip(scene, enc, SkimageProposer())
    _assert_nothing_written(scene)
    with pytest.raises(SemanticsInputError, match="000003.png"):
        es.extract_oracle(scene, enc)
    _assert_nothing_written(scene)
    with pytest.raises(SemanticsInputError, match="no usable frames"):
        es.extract_clip(tmp_path / "empty", enc, SkimageProposer())


def test_precomputed_wrong_size(tmp_path, enc):
    scene = make_scene(tmp_path / "c", frames=2)
    masks = tmp_path / "masks"
    masks.mkdir()
    for key in ("000001", "000002"):
        np.save(masks / f"{key}_s.npy", np.zeros((4, 10, 10), np.float32))
    with pytest.raises(SemanticsInputError, match=r"expected \(4, 48, 64\)"):
        es.extract_clip(scene, enc, PrecomputedProposer(masks), masks="precomputed")
    _assert_nothing_written(scene)


def test_cli_oracle_overwrite_and_sam_error(tmp_path, capsys):
    scene = synthetic_scene(tmp_path / "d", frames=4)
    assert es.main(["--scene", str(scene), "--mode", "oracle", "--clip", "tiny", "--device", "cpu"]) == 0
    assert (scene / "clip_features" / "000004_f.npy").is_file() and (scene / "video_features").is_dir()
    with pytest.raises(SystemExit, match="--overwrite"):
        es.main(["--scene", str(scene), "--mode", "oracle", "--clip", "tiny", "--device", "cpu"])
    assert es.main(["--scene", str(scene), "--mode", "oracle", "--clip", "tiny", "--device", "cpu",
                    "--overwrite", "--no-video", "--no-progress"]) == 0
    with pytest.raises(SystemExit, match="segment_anything|sam-checkpoint"):
        es.main(["--scene", str(scene), "--mode", "clip", "--masks", "sam", "--clip", "tiny", "--device", "cpu"])
    with pytest.raises(SystemExit, match="masks-dir"):
        es.main(["--scene", str(scene), "--mode", "clip", "--masks", "precomputed", "--clip", "tiny"])


def test_interrupted_run_resumes_without_redoing_frames(tmp_path, enc):
    scene = make_scene(tmp_path / "e", frames=3)
    calls: list[str] = []
    base = SkimageProposer()

    def flaky(image, key=""):
        calls.append(key)
        if key == "000003" and len(calls) == 3:
            raise RuntimeError("simulated crash")
        return base(image, key)

    with pytest.raises(RuntimeError, match="simulated"):
        es.extract_clip(scene, enc, flaky)
    assert not (scene / "clip_features").exists()  # no half-written final folder
    assert (scene / ".clip_features.partial" / "000002_s.npy").is_file()  # kept for resuming
    es.extract_clip(scene, enc, flaky)
    assert calls == ["000001", "000002", "000003", "000003"]  # frames 1-2 not recomputed
    assert len(list((scene / "clip_features").glob("*_f.npy"))) == 3
    assert not (scene / ".clip_features.partial").exists()


def test_sam_proposer_with_a_stub_segment_anything(tmp_path, monkeypatch, enc):
    """The SAM code path (point grid, 3-way multimask -> small/middle/large) end to end, with a stub SAM."""
    import sys
    import types

    import torch

    class Predictor:
        def __init__(self, sam):
            self.transform = types.SimpleNamespace(apply_coords_torch=lambda c, hw: c)

        def set_image(self, image):
            self.hw = image.shape[:2]

        def predict_torch(self, point_coords, point_labels, multimask_output=True):
            h, w = self.hw
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            masks = []
            for (x, y) in point_coords[:, 0].tolist():
                quads = [(ys // r == int(y) // r) & (xs // r == int(x) // r) for r in (8, 16, 32)]
                masks.append(torch.stack(quads))
            m = torch.stack(masks)
            return m, torch.full(m.shape[:2], 0.95), None

    stub = types.ModuleType("segment_anything")
    stub.SamPredictor = Predictor
    loaded = {}
    stub.sam_model_registry = {"vit_b": lambda checkpoint: types.SimpleNamespace(
        to=lambda d: None, load_state_dict=lambda sd, strict: loaded.update(sd))}
    monkeypatch.setitem(sys.modules, "segment_anything", stub)
    ckpt = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save({"w": torch.ones(2)}, ckpt)
    from preprocess.semantics.proposals import SamProposer

    scene = make_scene(tmp_path / "sam", frames=2)
    out = es.extract_clip(scene, enc, SamProposer(ckpt, points_per_side=8), masks="sam")
    assert torch.equal(loaded["w"], torch.ones(2))  # the weights were read by our safe reader
    s = np.load(out / "000001_s.npy")
    counts = [len(np.unique(s[lvl][s[lvl] >= 0])) for lvl in range(4)]
    assert counts[1] > counts[2] > counts[3] >= 1  # 8-, 16-, 32-pixel cells: small > middle > large
    assert counts[0] == counts[1]  # pooled default = the finest level where it covers everything
    with pytest.raises(SemanticsInputError, match="sam-checkpoint"):
        SamProposer(tmp_path / "missing.pth")
