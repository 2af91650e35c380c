import json

import numpy as np
import pytest
import torch

from preprocess.crop import CropInfo
from tests.training.helpers import PATCH, make_tiny_scene
from training.dataset import DatasetError, SceneDataset, collate_samples, input_grid_to_original
from training.targets import expand_targets
from utils.io import save_npy_atomic


def test_samples_are_aligned_with_the_targets(tmp_path):
    scene = make_tiny_scene(tmp_path / "a", n_frames=4, grid=(2, 3), video_dim=6)
    ds = SceneDataset([scene])
    assert len(ds) == 4 and ds.lang_dim == 3 and ds.video_dim == 6 and ds.patch_start_idx == 5
    s = ds[1]
    assert [t.shape for t in s["tokens"]] == [(5 + 6, 32)] * 4 and s["tokens"][0].dtype == torch.float16
    # compact samples (training.targets): uint8 frame, index maps on the network grid + feature rows
    assert s["frame"].shape == (3, 28, 42) and s["frame"].dtype == torch.uint8
    assert s["lang_index"].shape == (3, 28, 42) and s["video_index"].shape == (1, 28, 42)
    assert s["lang_table"].shape[1] == 3 and s["video_table"].shape[1] == 6
    seg = np.load(scene / "clip_features-language_features_dim3" / "000002_s.npy")
    rows = np.load(scene / "clip_features-language_features_dim3" / "000002_f.npy")
    b = expand_targets(collate_samples([ds[0], ds[1]]))
    tgt, mask = b["lang_target"][1], b["lang_mask"][1]
    for lvl in range(3):
        for y, x in [(0, 0), (20, 30), (27, 41)]:
            idx = int(seg[lvl + 1, y, x])
            assert bool(mask[lvl, y, x]) == (idx >= 0)
            if idx >= 0:
                assert torch.allclose(tgt[lvl, :, y, x], torch.from_numpy(rows[idx]))
            else:
                assert tgt[lvl, :, y, x].abs().sum() == 0
    assert b["tokens"][2].shape == (2, 11, 32) and b["lang_target"].shape == (2, 3, 3, 28, 42)
    assert b["video_target"].shape == (2, 6, 28, 42) and b["video_mask"].shape == (2, 28, 42)


def test_split_holds_out_eval_frames_unless_asked(tmp_path):
    scene = make_tiny_scene(tmp_path / "a", n_frames=6, eval_frames=(1, 4))
    coco = {"images": [{"id": 0, "file_name": "000003_png.rf.x.jpg"}], "annotations": [], "categories": []}
    (scene / "annotations" / "train").mkdir(parents=True)
    (scene / "annotations" / "train" / "_annotations.coco.json").write_text(json.dumps(coco))
    train, held = SceneDataset([scene]).split_indices()
    assert held == [2] and 2 not in train and len(train) == 5  # COCO wins over gt/names.json
    train, held = SceneDataset([scene], train_on_eval_frames=True).split_indices()
    assert held == [2] and train == list(range(6))
    # another frame size, the same preprocessing (crop to width 42; scenes of other widths are refused)
    other = make_tiny_scene(tmp_path / "b", n_frames=3, eval_frames=(0,), grid=(3, 3))
    ds = SceneDataset([tmp_path])  # a root of scenes
    assert len(ds.scenes) == 2 and len(ds) == 9 and ds.split_indices()[1] == [2, 6]
    assert [len(g) for g in ds.groups(range(9))] == [6, 3]  # (28, 42) and (42, 42) frames
    assert other.exists()


def test_preflight_lists_every_problem(tmp_path):
    scene = make_tiny_scene(tmp_path / "a", n_frames=4)
    (scene / "tokens" / "000002.safetensors").unlink()
    save_npy_atomic(np.zeros((4, 5, 5), np.float32), scene / "clip_features-language_features_dim3" / "000003_s.npy")
    (scene / "clip_features-language_features_dim3" / "000004_f.npy").unlink()
    with pytest.raises(DatasetError) as e:
        SceneDataset([scene])
    msg = str(e.value)
    assert "3 problem(s)" in msg and "000002" in msg and "000003_s.npy" in msg and "000004_f.npy" in msg
    with pytest.raises(DatasetError, match="neither a scene folder"):
        SceneDataset([tmp_path / "missing"])


def test_preflight_refuses_mismatched_cache_metadata(tmp_path):
    scene = make_tiny_scene(tmp_path / "a", n_frames=2)
    meta_path = scene / "tokens" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["grid"] = [3, 3]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="grid"):
        SceneDataset([scene])


def test_targets_follow_the_crop_not_a_stretch():
    # a 2x larger original frame whose resized image is cropped vertically: network pixel (y, x) must
    # read the original pixel at the same physical place.
    crop = CropInfo(orig_hw=(80, 56), resized_hw=(40, 28), box=(6, 0, PATCH * 2, 28))  # (top, left, h, w)
    oy, ox, valid = input_grid_to_original(crop)
    assert valid.all() and oy.shape == (28, 28)
    assert oy[0, 0] in (12, 13) and ox[0, 0] in (0, 1)  # (0 + 6 + 0.5) * 2 - 0.5 = 12.5
    assert oy[-1, -1] in (67, 68)
    pad = CropInfo(orig_hw=(28, 14), resized_hw=(28, 14), box=(0, -7, 28, 28), mode="pad")
    _, _, valid = input_grid_to_original(pad)
    assert not valid[:, :7].any() and valid[:, 7:21].all() and not valid[:, 21:].any()


@pytest.mark.parametrize("storage", ["fp16", "bf16", "fp32", "int8"])
def test_tokens_read_into_the_batch_equal_the_memory_mapped_ones(tmp_path, storage):
    """The trainer's loader reads every sample's layers straight into the batch (TokenSlices): the same tensors,
    bit for bit, as stacking the memory-mapped ones, in the storage dtype and converted to float32 (int8 caches
    are de-quantised as before); a file that shrank after its header was read is refused naming it."""
    from preprocess.token_cache import TokenCacheError, TokenSlices

    scene = make_tiny_scene(tmp_path / "a", n_frames=3, grid=(2, 3), storage=storage)
    mapped = SceneDataset([scene])
    direct = SceneDataset([scene], read_tokens_in_collate=True)
    sample = direct[1]
    assert isinstance(sample["tokens"], TokenSlices) == (storage != "int8")
    for token_dtype in (None, torch.float32):
        a = collate_samples([mapped[2], mapped[0]], token_dtype=token_dtype)["tokens"]
        b = collate_samples([direct[2], direct[0]], token_dtype=token_dtype)["tokens"]
        assert len(a) == len(b) == 4
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape == (2, 5 + 6, 32) and torch.equal(x, y)
    if storage != "int8":  # a sample whose tokens were read eagerly can share a batch with one read in collate
        mixed = collate_samples([mapped[0], direct[1]])["tokens"]
        assert all(torch.equal(m, torch.stack([u, v])) for m, u, v in
                   zip(mixed, mapped[0]["tokens"], mapped[1]["tokens"], strict=True))
        path = sample["tokens"].path
        path.write_bytes(path.read_bytes()[:-64])  # shrinks after the header was checked
        with pytest.raises(TokenCacheError, match=str(path)):
            collate_samples([sample])
