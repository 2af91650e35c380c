"""The token-extraction speed part of benchmarks/bench_token_cache.py (``--speed``) on a 2-frame video (so it
cannot rot): every stage it reports is found in the profile, and the nested ones fit inside their parents."""

from __future__ import annotations

from benchmarks.bench_token_cache import speed_benchmark


def test_speed_part_finds_every_stage(tmp_path):
    rows = speed_benchmark(2, [(1, 1), (1, 2)], 1, tmp_path)
    assert [(r["window"], r["chunk"], r["frames"]) for r in rows] == [(1, 1, 2), (1, 2, 2)]
    for r in rows:
        st = list(r["stages_s"].values())
        decode, prep, backbone, attention, sdpa, mlp, write = st
        assert all(v > 0 for v in st), r["stages_s"]
        assert sdpa <= attention and attention + mlp <= backbone
        assert decode + prep + backbone + write <= r["wall_s"]
