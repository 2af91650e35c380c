"""The training-data benchmark on a tiny scene: its re-implementation of the published data path gives the dense
targets our compact path expands to (so the two paths feed the loss the same values), and a run reports both."""

from __future__ import annotations

import json

import torch

from benchmarks.bench_train_data import (
    LAYERS,
    PublishedData,
    collate_published,
    main,
    ours_to_device,
    published_frames,
    published_to_device,
    write_scene,
)
from training.dataset import SceneDataset, collate_samples


def test_published_path_feeds_the_loss_what_ours_does(tmp_path):
    scene = tmp_path / "scene"
    write_scene(scene, 4, (2, 3), 16, seed=3)
    ours = SceneDataset([scene], video_subdir=None, train_on_eval_frames=True)
    pub = PublishedData(scene, target_width=3 * 14)  # the published 518 for 37-patch-wide frames
    assert len(ours) == len(pub) == 4
    a = ours_to_device(collate_samples([ours[1], ours[2]]), torch.device("cpu"))
    b = published_to_device(published_frames(collate_published([pub[1], pub[2]]), pub.pre), torch.device("cpu"))
    assert torch.equal(a["lang_mask"], b["lang_mask"])
    keep = a["lang_mask"].unsqueeze(2)  # no-region pixels read the last row there, zero here; the loss masks them
    assert torch.equal(a["lang_target"] * keep, b["lang_target"] * keep)
    assert bool(b["lang_mask"].any()) and bool((~b["lang_mask"]).any())  # both region and no-region pixels
    assert torch.equal(a["frame"], b["frame"])
    assert len(b["tokens"]) == 24 and len(a["tokens"]) == len(LAYERS)
    for ours_layer, layer in zip(a["tokens"], LAYERS, strict=True):  # fp16 cache vs the fp32 pickles
        torch.testing.assert_close(ours_layer, b["tokens"][layer], rtol=1e-3, atol=1e-3)


def test_benchmark_runs_both_paths_in_their_own_processes(tmp_path):
    out = main(["--frames", "4", "--grid", "2", "3", "--dim", "16", "--epochs", "2", "--rounds", "1",
                "--skip-train", "--threads", "1", "--workdir", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert len(out["data_ours_samples_per_s"]) == len(out["data_published_samples_per_s"]) == 1
    assert out["data_ours_samples_per_s"][0] > 0 and out["data_published_samples_per_s"][0] > 0
    assert json.loads((tmp_path / "r.json").read_text())["data_speedup_per_s_median"] > 0
