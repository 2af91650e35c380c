#!/usr/bin/env bash
# Interactive 4D viewer of an inference output (python -m viewer): points, cameras, fields, live text queries.
#
#   bash scripts/view.sh <out> [extra python -m viewer flags]
#
#   <out>      the output folder of scripts/infer.sh / python -m inference.run
#
# Environment variables (documented defaults):
#   HOST=127.0.0.1  PORT=8080        where the viewer listens (PORT=0: any free port); open http://HOST:PORT
#   CLIP=auto                        text encoder of the queries: an open_clip model name (with CLIP_WEIGHTS=<file>
#                                    for local weights), tiny / hash (tests, synthetic scenes), or auto: ViT-B-16
#                                    with the open_clip file in ckpt/open_clip/ if there is one, else hash (as the demo)
#   QUERIES="red ball;blue mug"      optional ';'-separated queries run at start
#   RECORD=                          a .viser or .html path: write a recording of every frame and exit
#   DEVICE=cpu                       device of the text encoder / autoencoder
#   PYTHON=python                    interpreter
set -euo pipefail
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
OUT="$1"; shift
PYTHON="${PYTHON:-python}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
args=(--fields "$OUT" --host "${HOST:-127.0.0.1}" --port "${PORT:-8080}" --device "${DEVICE:-cpu}")
CLIP="${CLIP:-auto}"
if [[ "$CLIP" == "auto" ]]; then
  CLIP_FILE="$(ls "$REPO"/ckpt/open_clip/*.bin "$REPO"/ckpt/open_clip/*.safetensors "$REPO"/ckpt/open_clip/*.pt \
               2>/dev/null | head -n 1 || true)"
  if [[ -n "$CLIP_FILE" ]]; then
    CLIP=ViT-B-16; CLIP_WEIGHTS="${CLIP_WEIGHTS:-$CLIP_FILE}"
  else
    CLIP=hash
    echo "view.sh: no open_clip file in ckpt/open_clip/: queries use the weight-free hash text encoder" >&2
  fi
fi
case "$CLIP" in
  hash) args+=(--hash-text) ;;
  tiny) args+=(--clip tiny) ;;
  *) args+=(--clip-model "$CLIP"); [[ -n "${CLIP_WEIGHTS:-}" ]] && args+=(--clip-weights "$CLIP_WEIGHTS") ;;
esac
if [[ -n "${QUERIES:-}" ]]; then
  IFS=';' read -ra qs <<< "$QUERIES"
  for q in "${qs[@]}"; do args+=(--text "$q"); done
fi
[[ -n "${RECORD:-}" ]] && args+=(--record "$RECORD")
exec "$PYTHON" -m viewer "${args[@]}" "$@"
