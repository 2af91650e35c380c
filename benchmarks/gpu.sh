#!/usr/bin/env bash
# One-shot GPU benchmark: every GPU figure of the README in one run (under 8 minutes on one H100 or H200).
#
#   bash benchmarks/gpu.sh [OUT]          # OUT=benchmarks/results/gpu-<date> (JSON files + a log)
#
# 1. full-size random-weight aggregator frames/s at 518x294 in bf16 (streaming, chunks of 8, window 128) with
#    achieved TFLOP/s against the card's peak; peak GPU memory at 100 vs 1,000 frames; inference frames/s
#    (backbone + decoder + heads)                                         -> python -m benchmarks.bench_gpu
# 2. training samples/s from the token cache (ours vs the published path) -> python -m benchmarks.bench_train_data
# 3. query frames/s (latent-grid path vs exact)                          -> python -m benchmarks.bench_query
# 4. peak GPU memory and seconds of one VGGT / PAGE-4D (mask on) window as inference runs it (full model with the
#    camera and depth heads, random weights, bf16, 518x294) at 8/16/32/64/128 frames (the README's Backbones
#    table; a size that does not fit is an "oom" row; not yet run on a GPU: 10 processes, about 3 min estimated)
#                                                                        -> python -m benchmarks.bench_backbone_windows
# 5. track head frames/s and peak memory (windows of 16, 256/1,024 points) -> python -m benchmarks.bench_track_head
# Needs the project's environment (PYTHON=python) and one CUDA device; nothing is downloaded.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$REPO/benchmarks/results/gpu-$(date +%Y%m%d-%H%M)}"
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
cd "$REPO"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device visible (torch.cuda.is_available() is False): run this on a GPU machine')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
run() { local name="$1"; shift; echo "== $name: $*"; local t0=$SECONDS; "$@" 2>&1 | tee "$OUT/$name.log"; echo "== $name: $((SECONDS - t0)) s"; }
run aggregator_inference "$PYTHON" -m benchmarks.bench_gpu --json "$OUT/bench_gpu.json"
run train_data "$PYTHON" -m benchmarks.bench_train_data --device cuda --decoder default --rounds 2 --json "$OUT/bench_train_data.json"
for fam in vggt page4d-mask; do
  run "backbone_windows_$fam" "$PYTHON" -m benchmarks.bench_backbone_windows --device cuda --depth 24 --dinov2 \
    --dtype bf16 --family "$fam" --heads camera depth --windows 8 16 32 64 128 \
    --json "$OUT/bench_backbone_windows_$fam.json"
done
if [[ -f benchmarks/bench_query.py ]]; then
  run query "$PYTHON" -m benchmarks.bench_query --device cuda --json "$OUT/bench_query.json"
fi
if [[ -f benchmarks/bench_track_head.py ]]; then
  run track_head "$PYTHON" -m benchmarks.bench_track_head --device cuda --json "$OUT/bench_track_head.json"
fi
echo "results in $OUT"
