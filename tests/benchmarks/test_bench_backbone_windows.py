"""The windowed-backbone memory benchmark of benchmarks/gpu.sh runs its code path (registry family, mask head,
camera and depth heads, a fresh process per window) on a tiny width on CPU, so it cannot rot before a GPU run."""

from __future__ import annotations

import json

from benchmarks.bench_backbone_windows import main


def test_bench_backbone_windows_tiny_page4d_mask_with_heads(tmp_path):
    rows = main(["--family", "page4d-mask", "--heads", "camera", "depth", "--depth", "24", "--embed-dim", "32",
                 "--num-heads", "2", "--size", "28x28", "--windows", "2", "--threads", "1",
                 "--json", str(tmp_path / "r.json")])
    assert len(rows) == 1 and "error" not in rows[0], rows
    row = rows[0]
    assert (row["window"], row["family"], row["heads"], row["tokens_per_frame"]) == (2, "page4d-mask",
                                                                                    ["camera", "depth"], 4 + 5)
    assert row["measured_gb"] >= 0 and row["layer_gb"] == 2 * 9 * 64 * 4 / 1e9
    assert json.loads((tmp_path / "r.json").read_text()) == rows
