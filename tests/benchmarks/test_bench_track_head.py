"""The track-head benchmark of benchmarks/gpu.sh runs its code path on the tiny head on CPU (so it cannot rot)."""

from __future__ import annotations

from benchmarks.bench_track_head import main


def test_bench_track_head_tiny_smoke(tmp_path):
    out = main(["--tiny", "--device", "cpu", "--window", "3", "--windows", "1", "--points", "4",
                "--json", str(tmp_path / "r.json")])
    assert out["runs"][0]["points"] == 4 and out["runs"][0]["frames_per_second"] > 0
    assert (tmp_path / "r.json").is_file()
