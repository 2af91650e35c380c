"""Strict loading of published VGGT-1B / PAGE-4D files: keys checked on the meta device against the official key
tables (no full-size allocation), a file without a head, an unexpected key, a pickled object."""

from __future__ import annotations

import logging
import types

import pytest
import torch

from model.registry import get_family
from model.vggt.loading import load_weights, read_state_dict
from tests.model.reference import (
    checkpoint_shapes,
    load_page4d_reference,
    page4d_key_shapes,
    page4d_state_dict,
)
from utils.cli import UserError


def _meta_network(family: str):
    with torch.device("meta"):
        return get_family(family).build(None)


def _meta_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def test_full_size_page4d_has_exactly_the_official_keys_in_order(fixtures_dir):
    model = _meta_network("page4d")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = page4d_key_shapes(fixtures_dir)
    assert list(ours) == list(official)  # same keys, same order (mask head right after global_blocks.23)
    assert ours == official
    assert sum(v.numel() for v in model.state_dict().values()) == 1_256_810_413


def test_full_size_vggt_has_the_streamvggt_keys(fixtures_dir):
    model = _meta_network("vggt")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == checkpoint_shapes(fixtures_dir)


def test_a_file_without_track_head_loads_with_one_warning_and_no_track_head(fixtures_dir, caplog):
    shapes = {k: s for k, s in page4d_key_shapes(fixtures_dir).items() if not k.startswith("track_head.")}
    model = _meta_network("page4d")
    with caplog.at_level(logging.WARNING):
        dropped = load_weights(model, _meta_state_dict(shapes), "checkpoint_nomask.pt")
    assert dropped == ["track_head"] and model.track_head is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "track_head" in warnings[0] and "checkpoint_nomask.pt" in warnings[0]
    assert set(model.state_dict()) == set(shapes)


def test_the_full_key_table_loads_without_warnings(fixtures_dir, caplog):
    model = _meta_network("page4d")
    with caplog.at_level(logging.WARNING):
        assert load_weights(model, _meta_state_dict(page4d_key_shapes(fixtures_dir)), "f.pt") == []
    assert not caplog.records and model.track_head is not None


@pytest.mark.parametrize("change", ["extra", "partial", "shape", "page4d-file-as-vggt", "vggt-file-as-page4d"])
def test_foreign_keys_are_one_clear_error(fixtures_dir, change):
    shapes = dict(page4d_key_shapes(fixtures_dir))
    if change == "extra":
        shapes["aggregator.extra_head.weight"] = (3,)
    elif change == "partial":
        del shapes["aggregator.frame_blocks.3.norm1.weight"]
    elif change == "shape":
        shapes["aggregator.camera_token"] = (1, 2, 1, 512)
    family = "page4d"
    if change == "page4d-file-as-vggt":  # the mask head is unexpected
        family = "vggt"
    elif change == "vggt-file-as-page4d":  # the mask head is missing
        shapes = {k: v for k, v in shapes.items() if "spatial_mask_head" not in k}
    with pytest.raises(UserError) as e:
        load_weights(_meta_network(family), _meta_state_dict(shapes), "bad.pt")
    text = str(e.value)
    assert "\n" not in text and "bad.pt" in text
    assert {"extra": "unexpected", "partial": "missing", "shape": "shape",
            "page4d-file-as-vggt": "--backbone page4d", "vggt-file-as-page4d": "--backbone vggt"}[change] in text


def test_a_snapshot_with_a_pickled_object_is_refused_unexecuted(tmp_path, fixtures_dir):
    ref = load_page4d_reference(fixtures_dir)
    path = tmp_path / "checkpoint_mask.pt"
    torch.save({"model": page4d_state_dict(ref), "args": types.SimpleNamespace(lr=1)}, path)
    with pytest.raises(UserError, match="refused"):
        read_state_dict(path)


def test_a_training_snapshot_reads_its_model_entry(tmp_path, fixtures_dir):
    """The official snapshot: model, optimizer state (tensors, numbers, numpy scalars), steps, time, scaler."""
    import numpy as np

    sd = page4d_state_dict(load_page4d_reference(fixtures_dir))
    snap = {"model": sd, "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-5}]},
            "prev_epoch": 4, "steps": {"train": np.int64(7)}, "time_elapsed": 12.5, "scaler": {"scale": 65536.0}}
    torch.save(snap, tmp_path / "s.pt")
    got = read_state_dict(tmp_path / "s.pt")
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
