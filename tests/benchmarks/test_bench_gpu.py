"""The one-shot GPU benchmark runs its code path on the tiny config on CPU (so it cannot rot between GPU runs)."""

from __future__ import annotations

from benchmarks.bench_gpu import main


def test_bench_gpu_tiny_smoke(tmp_path):
    out = main(["--tiny", "--device", "cpu", "--frames", "4", "--window", "2", "--memory-frames", "2", "3",
                "--inference-frames", "8", "--json", str(tmp_path / "r.json")])
    assert out["aggregator_streaming"]["frames"] == 4 and out["aggregator_chunks_of_8"]["frames_per_second"] > 0
    assert out["inference"]["frames"] == 8 and (tmp_path / "r.json").is_file()
