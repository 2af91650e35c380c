"""Compact samples (uint8 frames, index maps + feature tables, gathered on the device) give the trainer the exact
batch, and so the exact loss, of the previous data path (float frames, targets densely gathered on the CPU)."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from model.decoder import DecoderConfig, SemanticBridgingDecoder
from preprocess.crop import CropInfo, FramePreprocessor
from preprocess.frames import FrameRef, read_frame
from tests.training.helpers import make_cropped_scene, make_tiny_scene
from training.dataset import DatasetError, SceneDataset, check_finite_batch, input_grid_to_original
from training.loss import LOSS_KINDS, compute_loss
from training.targets import (
    FRAME_LUT,
    GridMap,
    batch_to_device,
    collate_samples,
    expand_targets,
    frame_uint8,
    read_frame_uint8,
)
from training.trainer import main
from utils.io import load_npy, save_npy_atomic

FEATS = "clip_features-language_features_dim3"
VIDEO = "video_features-language_features_dim6"


def _dense_gather(scene, sub, key, levels):
    """The previous ``SceneDataset._gather``, verbatim: (L, k, h, w) float32 features, (L, h, w) bool mask."""
    oy, ox, valid = input_grid_to_original(scene.crop)
    seg = load_npy(scene.root / sub / f"{key}_s.npy")
    n_lvl = len(range(*levels.indices(seg.shape[0])))
    flat = (oy * seg.shape[2] + ox).reshape(-1)
    idx = np.take(seg[levels].reshape(n_lvl, -1), flat, axis=1).astype(np.int64)
    idx[:, ~valid.reshape(-1)] = -1
    feats = load_npy(scene.root / sub / f"{key}_f.npy")
    mask = idx >= 0
    feats = np.concatenate([np.asarray(feats, dtype=np.float32), np.zeros((1, feats.shape[1]), np.float32)])
    rows = np.take(feats, np.where(mask, idx, -1), axis=0)
    h, w = oy.shape
    rows = rows.transpose(0, 2, 1).reshape(n_lvl, -1, h, w)
    return torch.from_numpy(np.ascontiguousarray(rows)), torch.from_numpy(mask.reshape(n_lvl, h, w))


def dense_batch(ds, indices):
    """The batch the trainer saw before (previous sample layout, collate and move to the CPU)."""
    samples = []
    for i in indices:
        item = ds.items[i]
        scene = ds.scenes[item.scene]
        key = item.ref.key
        frame, _ = scene.preprocessor.prepare(read_frame(item.ref))
        lang, mask = _dense_gather(scene, ds.features_subdir, key, slice(1, 4))
        s = {"tokens": ds.load_tokens(item.scene, key), "frame": frame, "lang_target": lang, "lang_mask": mask}
        if ds.video_subdir:
            v, vm = _dense_gather(scene, ds.video_subdir, key, slice(0, 1))
            s["video_target"], s["video_mask"] = v[0], vm[0]
        samples.append(s)
    out = {k: torch.stack([s[k] for s in samples]) for k in samples[0] if k != "tokens"}
    out["tokens"] = [torch.stack(layer).float() for layer in zip(*(s["tokens"] for s in samples), strict=True)]
    return out


def trainer_batch(ds, indices, token_dtype=torch.float32):
    """What the trainer now does with a batch of ``indices``: collate, move, check, expand."""
    batch = batch_to_device(collate_samples([ds[i] for i in indices], token_dtype=token_dtype), "cpu")
    check_finite_batch(batch, ds)
    return expand_targets(batch)


SCENES = {  # name: (original frame size (H, W), target width, mode, _s.npy dtypes by frame)
    "resize-and-crop": ((40, 60), 42, "crop", ("float32", "int32")),  # mixed dtypes in one batch
    "pad": ((40, 60), 42, "pad", ("float32",)),  # padded rows: masked pixels, white frame borders
    "portrait-crop": ((70, 30), 28, "crop", ("float64",)),
    "no-resize": ((42, 56), 56, "resize", ("float32",)),  # network input = frame: views, the fast frame path
    "native-offset": ((31, 45), 14, "native", ("int64", "float32")),  # a cut without resize, offset
    "turned": ((28, 42), 14, "original", ("float32",)),  # the published rotation: the non-separable grid map
}


@pytest.mark.parametrize("name", list(SCENES))
def test_trainer_batch_and_loss_equal_the_dense_gather(tmp_path, name):
    orig_hw, width, mode, dtypes = SCENES[name]
    scene = make_cropped_scene(tmp_path / name, orig_hw, width, mode, n_frames=4, video_dim=6, index_dtypes=dtypes)
    ds = SceneDataset([scene])
    assert ds.video_subdir == VIDEO
    torch.manual_seed(0)
    h, w = ds.scenes[0].crop.input_hw
    model = SemanticBridgingDecoder(DecoderConfig.tiny(dim_in=16, lang_dim=3, video_dim=6))
    for indices in ([0, 1], [2, 3], [3, 0]):
        old = dense_batch(ds, indices)
        for token_dtype in (torch.float32, None):  # CPU: converted while stacked; GPU: in the storage dtype
            new = trainer_batch(ds, indices, token_dtype)
            assert new["frame"].shape == (2, 3, h, w)
            for key in ("frame", "lang_target", "lang_mask", "video_target", "video_mask"):
                assert new[key].dtype == old[key].dtype and new[key].is_contiguous(), key
                assert torch.equal(new[key], old[key]), key
            assert all(torch.equal(a, b) for a, b in zip(new["tokens"], old["tokens"], strict=True))
        outs = [model.predict(b["tokens"], b["frame"], ds.patch_start_idx) for b in (old, new)]
        for kind in LOSS_KINDS:
            t_old, t_new = (compute_loss(o, b, kind=kind) for o, b in zip(outs, (old, new), strict=True))
            assert set(t_old) == set(t_new) and {"lang", "rgb", "video"} <= set(t_new)
            for k in t_old:
                assert torch.equal(t_old[k], t_new[k]), (kind, k)
        # compute_loss also expands a compact batch itself
        compact = batch_to_device(collate_samples([ds[i] for i in indices]), "cpu")
        assert torch.equal(compute_loss(outs[1], compact)["loss"], compute_loss(outs[0], old)["loss"])


def test_grid_map_reads_what_the_dense_index_reads(tmp_path):
    crops = [CropInfo(orig_hw=(80, 56), resized_hw=(40, 28), box=(6, 0, 28, 28)),
             CropInfo(orig_hw=(28, 14), resized_hw=(28, 14), box=(0, -7, 28, 28), mode="pad"),
             FramePreprocessor(mode="original").plan((30, 44)),
             CropInfo.identity((28, 42))]
    rng = np.random.default_rng(0)
    for crop in crops:
        gm = GridMap.of(crop)
        H, W = crop.orig_hw
        seg = rng.integers(-1, 50, size=(4, H, W)).astype(np.float32)
        oy, ox, valid = input_grid_to_original(crop)
        want = seg[1:4][:, oy, ox]
        want[:, ~valid] = -1
        np.save(tmp_path / "s.npy", seg)
        got = gm.read(tmp_path / "s.npy", slice(1, 4))
        assert got.dtype == np.float32 and np.array_equal(got, want)
        assert (gm.flat is not None) == bool(crop.rot90)
    assert isinstance(GridMap.of(crops[3]).rows, slice)  # frame = network input: a view, no copy


@pytest.mark.parametrize("mode,orig_hw,width", [("resize", (40, 60), 42), ("crop", (70, 30), 28),
                                                 ("pad", (30, 50), 28), ("native", (31, 45), 14),
                                                 ("original", (28, 44), 14), ("resize", (28, 42), 42)])
def test_uint8_frames_give_the_float_frames_of_prepare(tmp_path, mode, orig_hw, width):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(*orig_hw, 3), dtype=np.uint8)
    rgb[0, :256 % orig_hw[1]] = np.arange(256 % orig_hw[1], dtype=np.uint8)[:, None]
    pre = FramePreprocessor(target_width=width, mode=mode)
    want, _ = pre.prepare(rgb)
    got = frame_uint8(pre, rgb)
    assert got.dtype == torch.uint8 and got.shape == want.shape
    assert torch.equal(got.float().div_(255.0), want)
    assert torch.equal(torch.take(FRAME_LUT, got.long()), want)  # what a GPU computes
    path = tmp_path / "f.png"
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    ref = FrameRef(key="f", index=0, path=path)
    assert torch.equal(read_frame_uint8(ref, pre), got)


def test_frame_lut_is_the_division_of_prepare():
    values = torch.arange(256).to(torch.uint8)
    assert torch.equal(FRAME_LUT, values.float().div_(255.0))
    assert FRAME_LUT[255] == 1.0 and FRAME_LUT[0] == 0.0


def test_changed_targets_are_named_when_read(tmp_path):
    """Targets that turn bad after the pre-flight: the batch check names the file (nothing reaches the gather)."""
    scene = make_cropped_scene(tmp_path / "s", (40, 60), 42, "crop", n_frames=2)
    ds = SceneDataset([scene])
    s_path, f_path = scene / FEATS / "000002_s.npy", scene / FEATS / "000002_f.npy"
    seg, rows = np.load(s_path), np.load(f_path)
    save_npy_atomic(np.where(seg == 0, len(rows), seg).astype(np.float32), s_path)
    with pytest.raises(DatasetError, match="has only") as e:
        trainer_batch(ds, [0, 1])
    assert str(s_path) in str(e.value)
    save_npy_atomic(seg, s_path)
    rows[0, 1] = np.inf
    save_npy_atomic(rows, f_path)
    with pytest.raises(DatasetError, match="NaN or inf in the targets") as e:
        trainer_batch(ds, [1, 0])
    assert str(f_path) in str(e.value)


def test_checkpoint_records_the_preprocessing_of_the_token_caches(tmp_path):
    scene = make_cropped_scene(tmp_path / "s", (40, 60), 42, "pad", n_frames=4)
    main(["--scenes", str(scene), "--out", str(tmp_path / "run"), "--decoder", "tiny", "--no-progress", "--threads",
          "1", "--epochs", "1", "--batch-size", "2", "--no-val"])
    state = json.loads((tmp_path / "run" / "checkpoint_epoch_1" / "state.json").read_text())
    assert state["token_info"]["preprocess"] == {"mode": "pad", "target_width": 42}
    assert "num_workers" not in state["args"]  # how the data was read, not what was trained
    # caches whose meta.json predates the mode / target_width fields: taken from their crop
    old = make_tiny_scene(tmp_path / "old", n_frames=4, grid=(2, 3))
    assert SceneDataset([old]).token_info["preprocess"] == {"mode": "crop", "target_width": 42}


def test_scenes_of_different_preprocessing_are_refused(tmp_path):
    a = make_cropped_scene(tmp_path / "root" / "a", (40, 60), 42, "crop")
    b = make_cropped_scene(tmp_path / "root" / "b", (40, 60), 28, "crop")
    with pytest.raises(DatasetError, match="different frame preprocessing") as e:
        SceneDataset([a, b])
    assert str(b / "tokens" / "meta.json") in str(e.value) and "\n" not in str(e.value)
    shutil.rmtree(b)
    make_cropped_scene(tmp_path / "root" / "b", (40, 60), 42, "resize")
    with pytest.raises(DatasetError, match="mode 'resize'"):
        SceneDataset([tmp_path / "root"])
    shutil.rmtree(b)
    make_cropped_scene(tmp_path / "root" / "b", (70, 60), 42, "crop")  # other frame size, same preprocessing
    assert len(SceneDataset([tmp_path / "root"]).groups(range(8))) == 2
