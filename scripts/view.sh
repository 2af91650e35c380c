#!/usr/bin/env bash
# Interactive 4D viewer of an inference output (python -m viewer): points, cameras, fields, live text queries.
#
#   bash scripts/view.sh <out> [extra python -m viewer flags]
#
#   <out>      the output folder of scripts/infer.sh / python -m inference.run
#
# Environment variables (documented defaults):
#   HOST=127.0.0.1  PORT=8080        where the viewer listens (PORT=0: any free port); open http://HOST:PORT
#   CLIP=ViT-B-16                    text encoder of the queries: an open_clip model name (with CLIP_WEIGHTS=<file>
#                                    for local weights), or tiny / hash (tests, synthetic scenes)
#   QUERIES="red ball;blue mug"      optional ';'-separated queries run at start
#   RECORD=                          a .viser or .html path: write a recording of every frame and exit
#   DEVICE=cpu                       device of the text encoder / autoencoder
#   PYTHON=python                    interpreter
set -euo pipefail
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
OUT="$1"; shift
PYTHON="${PYTHON:-python}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
args=(--fields "$OUT" --host "${HOST:-127.0.0.1}" --port "${PORT:-8080}" --device "${DEVICE:-cpu}")
case "${CLIP:-ViT-B-16}" in
  hash) args+=(--hash-text) ;;
  tiny) args+=(--clip tiny) ;;
  *) args+=(--clip-model "${CLIP:-ViT-B-16}"); [[ -n "${CLIP_WEIGHTS:-}" ]] && args+=(--clip-weights "$CLIP_WEIGHTS") ;;
esac
if [[ -n "${QUERIES:-}" ]]; then
  IFS=';' read -ra qs <<< "$QUERIES"
  for q in "${qs[@]}"; do args+=(--text "$q"); done
fi
[[ -n "${RECORD:-}" ]] && args+=(--record "$RECORD")
exec "$PYTHON" -m viewer "${args[@]}" "$@"
