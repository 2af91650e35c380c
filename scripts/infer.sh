#!/usr/bin/env bash
# Inference on a video or a frame folder, then (optionally) text queries.
#
#   bash scripts/infer.sh <source> [out] [-- extra inference.run flags]
#
#   <source>   frames folder (data/hypernerf/<scene>/rgb/2x), a scene folder, or a video (.mp4)
#   [out]      output folder (default: outputs/infer/<name of source>)
#
# Environment variables (documented defaults):
#   DECODER=ckpt/4dlangvggt          trained decoder: checkpoint_epoch_<N>/ folder, training run folder, or the
#                                    published ckpt/4dlangvggt/checkpoint_epoch_100.pth (with PRESET=published)
#   PRESET=default                   'published': the published 4DLangVGGT inference path exactly (frames turned
#                                    and cropped as published, fp32 frame-by-frame streaming, 120-frame cache)
#   PUBLISHED_PNG=0                  1: also write the published picture layout under <out>/published/
#   BACKBONE=ckpt/streamvggt/checkpoints.pth   StreamVGGT weights (or lch01/StreamVGGT, or 'tiny' for tests);
#                                    empty = cached tokens only, no geometry
#   AUTOENCODER=                     autoencoder folder (copied into the output, used by the queries)
#   VIDEO_AUTOENCODER=               time-sensitive field's autoencoder folder (copied into the output)
#   DEVICE=auto  DTYPE=fp32          cpu | cuda | auto;  fp32 | fp16 | bf16 (reduced precision on CUDA only)
#   CHUNK=8  WINDOW=128              frames per backbone pass; past frames kept in the streaming cache
#                                    (PRESET=published: 1 and 120 unless set)
#   VIDEO=1                          also write mp4s (0 to skip)
#   QUERIES="red ball;blue mug"      optional ';'-separated text queries run afterwards (python -m eval.query)
#   CLIP=ViT-B-16                    text encoder for the queries: an open_clip model name (with CLIP_WEIGHTS=<file>
#                                    for local weights), or tiny / hash (tests, synthetic scenes)
#   PYTHON=python                    interpreter
set -euo pipefail
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
SOURCE="$1"; shift
OUT="outputs/infer/$(basename "${SOURCE%.*}")"
if [[ $# -gt 0 && "$1" != "--" ]]; then OUT="$1"; shift; fi
if [[ $# -gt 0 && "$1" == "--" ]]; then shift; fi
PYTHON="${PYTHON:-python}"
DECODER="${DECODER:-ckpt/4dlangvggt}"
BACKBONE="${BACKBONE-ckpt/streamvggt/checkpoints.pth}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
args=(--source "$SOURCE" --out "$OUT" --decoder "$DECODER" --device "${DEVICE:-auto}" --preset "${PRESET:-default}")
[[ -n "${DTYPE:-}" ]] && args+=(--compute-dtype "$DTYPE")
[[ -n "${CHUNK:-}" ]] && args+=(--chunk-size "$CHUNK")
[[ -n "${WINDOW:-}" ]] && args+=(--window "$WINDOW")
[[ "${PUBLISHED_PNG:-0}" == "1" ]] && args+=(--published-png)
[[ -n "$BACKBONE" ]] && args+=(--backbone "$BACKBONE")
[[ -n "${AUTOENCODER:-}" ]] && args+=(--autoencoder "$AUTOENCODER")
[[ -n "${VIDEO_AUTOENCODER:-}" ]] && args+=(--video-autoencoder "$VIDEO_AUTOENCODER")
[[ "${VIDEO:-1}" == "1" ]] && args+=(--video)
"$PYTHON" -m inference.run "${args[@]}" "$@"
if [[ -n "${QUERIES:-}" ]]; then
  qargs=(--fields "$OUT" --device "${DEVICE:-auto}")
  case "${CLIP:-ViT-B-16}" in
    hash) qargs+=(--hash-text) ;;
    tiny) qargs+=(--clip tiny) ;;
    *) qargs+=(--clip-model "${CLIP:-ViT-B-16}"); [[ -n "${CLIP_WEIGHTS:-}" ]] && qargs+=(--clip-weights "$CLIP_WEIGHTS") ;;
  esac
  IFS=';' read -ra qs <<< "$QUERIES"
  for q in "${qs[@]}"; do qargs+=(--text "$q"); done
  [[ "${VIDEO:-1}" == "1" ]] || qargs+=(--no-video)
  "$PYTHON" -m eval.query "${qargs[@]}"
fi
