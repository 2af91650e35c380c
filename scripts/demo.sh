#!/usr/bin/env bash
# One-command demo: synthetic scene -> tokens -> targets -> autoencoders -> training -> inference -> evaluation.
#
#   bash scripts/demo.sh [--fresh] [--out DIR] [--frames N] [--epochs N] [--device D] [--quick]
#
# Weights: with ckpt/streamvggt/checkpoints.pth the real StreamVGGT backbone extracts the tokens, and with an
# open_clip file in ckpt/open_clip/ (.bin/.safetensors/.pt) the real CLIP text encoder embeds the region names
# (oracle targets) and the queries. Without them: the seeded RANDOM tiny backbone and the weight-free hash
# text encoder (model/text.py); the script says which it used. Without weights the demo is a check that the
# whole chain learns and is scored honestly, not a measure of open-vocabulary quality.
#
# Flags (or environment variables; flags win):
#   --out DIR      OUT=<repo>/outputs/demo   everything goes here (scene, autoencoders, run, inference, eval)
#   --frames N     FRAMES=64                 synthetic frames (every 4th from frame 2 is annotated and held out)
#   --epochs N     EPOCHS=30                 decoder training epochs
#   --device D     DEVICE=auto               cpu | cuda | auto
#   --fresh        FRESH=1                   delete OUT first (otherwise finished steps are reused)
#   --quick        QUICK=1                   a tiny, fast configuration (tests): 12 frames, small frames/decoder,
#                                            100 short epochs
#   WIDTH=200 HEIGHT=150 TARGET_WIDTH=196    synthetic frame size; network input width (multiple of 14)
#   TOKENS_DTYPE=fp16                        token cache storage: fp16 | bf16 | fp32 | int8
#   BATCH=4 LR=2e-3 WARMUP=1                 training recipe of the demo (train.py's defaults are the published
#                                            recipe: lr 4e-5, 20 warmup epochs, 100 epochs, batch 8)
#   W_RGB=1 W_COS=0.1 W_VIDEO=1              loss weights (RGB term, feature cosine (train.py: 0.01), video term)
#   AE_EPOCHS=200 VIDEO_AE_EPOCHS=100        autoencoder epochs (200: rare part names need them to stay apart)
#   DECODER_CONFIG='{...}'                   DecoderConfig JSON (default: a small decoder, frame input on)
#   THREADS=1  PYTHON=python  SEED=0  ORACLE=1  torch threads per step (1: the small models run fastest on one
#                                            thread and do not slow down on a busy machine); ORACLE: also score the
#                                            targets themselves (the upper bound)
#   TRAIN_THREADS=2 VAL_EVERY=10             torch threads of the training step (its convolutions are 80 % of the
#                                            demo: 2 threads train 1.45x faster; a fixed count, so the figures do
#                                            not depend on the machine's cores); validation loss every N epochs
#   BB_WINDOW=16 BB_OVERLAP=4                the backbone comparison (geometry only, no decoder): every family
#                                            (streamvggt, vggt, page4d, page4d-mask) on the world, scored by
#                                            eval.geometry, one row each; VGGT / PAGE-4D in windows of BB_WINDOW
#                                            frames. Weights: ckpt/vggt/model.safetensors, ckpt/page4d/
#                                            checkpoint_{nomask,mask}.pt when present, else RANDOM tiny (a pipeline
#                                            baseline, said so in the table). BACKBONES=0 skips it
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --fresh) FRESH=1; shift ;;
    --quick) QUICK=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --frames) FRAMES="$2"; shift 2 ;;
    --epochs) EPOCHS="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ "${QUICK:-0}" == "1" ]]; then
  : "${FRAMES:=12}" "${WIDTH:=84}" "${HEIGHT:=56}" "${TARGET_WIDTH:=84}" "${EPOCHS:=100}" "${AE_EPOCHS:=300}"
  : "${BATCH:=2}" "${LR:=4e-3}" "${W_RGB:=0}"
  : "${VIDEO_AE_EPOCHS:=300}" "${BB_WINDOW:=8}" "${BB_OVERLAP:=2}"
  [[ -n "${DECODER_CONFIG:-}" ]] || DECODER_CONFIG='{"dpt_features": 16, "dpt_out_channels": [8, 16, 32, 32], "lang_widths": [16, 16, 32, 32], "rgb_widths": [8, 8, 8, 8]}'
fi
OUT="${OUT:-$REPO/outputs/demo}"; [[ "$OUT" == /* ]] || OUT="$PWD/$OUT"; FRAMES="${FRAMES:-64}"; EPOCHS="${EPOCHS:-30}"; DEVICE="${DEVICE:-auto}"
WIDTH="${WIDTH:-200}"; HEIGHT="${HEIGHT:-150}"; TARGET_WIDTH="${TARGET_WIDTH:-196}"; TOKENS_DTYPE="${TOKENS_DTYPE:-fp16}"
BATCH="${BATCH:-4}"; LR="${LR:-2e-3}"; WARMUP="${WARMUP:-1}"; SEED="${SEED:-0}"; W_RGB="${W_RGB:-1}"
W_COS="${W_COS:-0.1}"; W_VIDEO="${W_VIDEO:-1}"
AE_EPOCHS="${AE_EPOCHS:-200}"; VIDEO_AE_EPOCHS="${VIDEO_AE_EPOCHS:-100}"
[[ -n "${DECODER_CONFIG:-}" ]] || DECODER_CONFIG='{"dpt_features": 32, "dpt_out_channels": [16, 32, 64, 64], "lang_widths": [16, 32, 64, 64], "rgb_widths": [8, 8, 16, 16]}'
THREADS="${THREADS:-1}"; PYTHON="${PYTHON:-python}"; ORACLE="${ORACLE:-1}"
TRAIN_THREADS="${TRAIN_THREADS:-2}"; VAL_EVERY="${VAL_EVERY:-10}"
BB_WINDOW="${BB_WINDOW:-16}"; BB_OVERLAP="${BB_OVERLAP:-4}"; BACKBONES="${BACKBONES:-1}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
cd "$REPO"
if ! "$PYTHON" -c "import torch, cv2, open_clip, safetensors" 2>/dev/null; then
  echo "demo.sh: '$PYTHON' cannot import the project's dependencies (torch, opencv, open_clip, safetensors);" \
       "activate the project's environment or set PYTHON=/path/to/venv/bin/python" >&2
  exit 2
fi

if [[ "${FRESH:-0}" == "1" && -d "$OUT" ]]; then rm -rf -- "$OUT"; fi
mkdir -p "$OUT/.done"
OUT="$(cd "$OUT" && pwd)"
SCENE="$OUT/scene"; LOG="$OUT/demo.log"
: > "$LOG"

# ---------------------------------------------------------------- weights
STREAMVGGT="$REPO/ckpt/streamvggt/checkpoints.pth"
CLIP_FILE="$(ls "$REPO"/ckpt/open_clip/*.bin "$REPO"/ckpt/open_clip/*.safetensors "$REPO"/ckpt/open_clip/*.pt \
             2>/dev/null | head -n 1 || true)"
if [[ -f "$STREAMVGGT" ]]; then
  BACKBONE_ARGS=(--backbone streamvggt --checkpoint "$STREAMVGGT"); BACKBONE_SPEC="$STREAMVGGT"
  BACKBONE_DESC="StreamVGGT official weights ($STREAMVGGT)"
else
  BACKBONE_ARGS=(--backbone tiny --seed "$SEED"); BACKBONE_SPEC="tiny:$SEED"
  BACKBONE_DESC="tiny RANDOM StreamVGGT (no ckpt/streamvggt/checkpoints.pth)"
fi
if [[ -n "$CLIP_FILE" ]]; then
  TEXT_SEM=(--clip pretrained --clip-weights "$CLIP_FILE")
  TEXT_EVAL=(--clip pretrained --clip-weights "$CLIP_FILE"); TEXT_DESC="open_clip ViT-B-16 text encoder ($CLIP_FILE)"
else
  TEXT_SEM=(--hash-text); TEXT_EVAL=(--hash-text)
  TEXT_DESC="weight-free hash bag-of-words text encoder (no open_clip file in ckpt/open_clip/)"
fi
say() { echo "[demo] $*"; }
say "output folder: $OUT (log: $LOG)"
say "backbone: $BACKBONE_DESC"
say "text encoder: $TEXT_DESC"
[[ -f "$STREAMVGGT" && -n "$CLIP_FILE" ]] || say "NOTE: without official weights the numbers below check that the chain learns the synthetic scene; they say nothing about open-vocabulary quality."

# ---------------------------------------------------------------- resumable steps
# A step is skipped when its stamp holds the same settings (its own + every earlier step's): changing a
# setting reruns that step and everything after it.
CHAIN=""
step() {  # step NAME "settings" command...
  local name="$1" settings="$2"; shift 2
  CHAIN="$CHAIN|$name:$settings"
  local stamp="$OUT/.done/$name"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$CHAIN" ]]; then
    say "$name: done before, reused (--fresh to redo)"; return 0
  fi
  rm -f "$stamp"
  local t0=$SECONDS
  say "$name ..."
  if ! "$@" >> "$LOG" 2> >(tee -a "$LOG" >&2); then
    echo "[demo] $name FAILED; last lines of $LOG:" >&2; tail -n 25 "$LOG" >&2; exit 1
  fi
  printf '%s' "$CHAIN" > "$stamp"
  say "$name: $((SECONDS - t0)) s"
}
T0=$SECONDS
step scene "3d-world $FRAMES $WIDTH $HEIGHT $SEED" \
  "$PYTHON" -m preprocess.make_synthetic --out "$SCENE" --frames "$FRAMES" --width "$WIDTH" --height "$HEIGHT" \
  --seed "$SEED" --overwrite
step tokens "${BACKBONE_ARGS[*]} $TARGET_WIDTH $DEVICE $TOKENS_DTYPE" \
  "$PYTHON" -m preprocess.extract_tokens "$SCENE" "${BACKBONE_ARGS[@]}" --target-width "$TARGET_WIDTH" \
  --device "$DEVICE" --dtype "$TOKENS_DTYPE" --overwrite
step targets "${TEXT_SEM[*]}" \
  "$PYTHON" -m preprocess.extract_semantics --scene "$SCENE" --mode oracle "${TEXT_SEM[@]}" --device "$DEVICE" \
  --overwrite
step autoencoder "$AE_EPOCHS" \
  "$PYTHON" -m preprocess.train_autoencoder --scenes "$SCENE" --features clip_features --dim 3 --epochs "$AE_EPOCHS" \
  --out "$OUT/autoencoder" --device "$DEVICE" --overwrite
step video_autoencoder "$VIDEO_AE_EPOCHS" \
  "$PYTHON" -m preprocess.train_autoencoder --scenes "$SCENE" --features video_features --dim 6 \
  --epochs "$VIDEO_AE_EPOCHS" --lr 7e-4 --cos-weight 1e-3 --out "$OUT/autoencoder_video" --device "$DEVICE" --overwrite \
 
step autoencoder_check "" \
  "$PYTHON" -m scripts.demo_checks autoencoder --scene "$SCENE" --autoencoder "$OUT/autoencoder" \
  --video-autoencoder "$OUT/autoencoder_video" --out "$OUT/autoencoder_check.json"
rm -rf "$OUT/run.partial"
step train "$EPOCHS $BATCH $LR $WARMUP $W_RGB $W_COS $W_VIDEO $DECODER_CONFIG $TRAIN_THREADS $VAL_EVERY" \
  bash -c 'rm -rf "$1" && "$2" "$3/train.py" --scenes "$4" --out "$1" --decoder tiny --decoder-config "$5" \
    --epochs "$6" --batch-size "$7" --lr "$8" --warmup-epochs "$9" --schedule cosine --min-lr 1e-5 \
    --device "${10}" --threads "${11}" --seed "${12}" --w-rgb "${13}" --w-cos "${14}" --w-video "${15}" --cache-in-memory --save-every 1000 \
    --val-every "${16}"' _ \
  "$OUT/run" "$PYTHON" "$REPO" "$SCENE" "$DECODER_CONFIG" "$EPOCHS" "$BATCH" "$LR" "$WARMUP" "$DEVICE" \
  "$TRAIN_THREADS" "$SEED" "$W_RGB" "$W_COS" "$W_VIDEO" "$VAL_EVERY"
step inference "$BACKBONE_SPEC" \
  env PYTHON="$PYTHON" DECODER="$OUT/run" BACKBONE="$BACKBONE_SPEC" AUTOENCODER="$OUT/autoencoder" \
  VIDEO_AUTOENCODER="$OUT/autoencoder_video" DEVICE="$DEVICE" VIDEO=0 \
  bash "$REPO/scripts/infer.sh" "$SCENE" "$OUT/inference" -- --overwrite -q
# the scene's TRUE depth and cameras in a labelled copy of the output (the random tiny backbone's geometry means
# nothing; the language fields are the model's either way)
step ground_truth "" \
  "$PYTHON" -m inference.ground_truth --fields "$OUT/inference" --scene "$SCENE" --out "$OUT/inference_gt" --overwrite
step evaluate "" \
  "$PYTHON" -m eval.evaluate --scene "$SCENE" --fields "$OUT/inference" --autoencoder "$OUT/autoencoder" \
  --video-autoencoder "$OUT/autoencoder_video" "${TEXT_EVAL[@]}" --device "$DEVICE" --overlays --out "$OUT/eval"
if [[ "$ORACLE" == "1" ]]; then
  step oracle "" \
    "$PYTHON" -m eval.evaluate --scene "$SCENE" --targets "${TEXT_EVAL[@]}" --device "$DEVICE" --out "$OUT/eval_oracle"
fi
# 4D: where things go (weight-free tracker, DIS flow, moving masks) and the backbone's geometry, both against the
# world's exact ground truth (gt/)
step motion "" \
  "$PYTHON" -m eval.tracks.scene "$SCENE" --out "$OUT/motion" -q
step geometry "" \
  "$PYTHON" -m eval.geometry --pred "$OUT/inference" --gt "$SCENE" --gt-format synthetic --out "$OUT/geometry_eval" -q
# every geometry backbone on the same world, geometry only (a decoder per backbone would be a training each): the
# published files when they are in ckpt/, else the seeded RANDOM tiny model of the family (a pipeline baseline)
if [[ "$BACKBONES" == "1" ]]; then
  BB_NAMES=(); BB_PREDS=()
  for fam in streamvggt vggt page4d page4d-mask; do
    case "$fam" in
      streamvggt) spec="$BACKBONE_SPEC"; win=() ;;  # streaming: its own window (past frames), no overlap
      vggt) f="$(ls "$REPO"/ckpt/vggt/model.safetensors "$REPO"/ckpt/vggt/model.pt 2>/dev/null | head -n 1 || true)"
            spec="vggt:${f:-tiny:$SEED}"; win=(--window "$BB_WINDOW" --overlap "$BB_OVERLAP") ;;
      page4d) f="$REPO/ckpt/page4d/checkpoint_nomask.pt"; [[ -f "$f" ]] || f="tiny:$SEED"
              spec="page4d:$f"; win=(--window "$BB_WINDOW" --overlap "$BB_OVERLAP") ;;
      page4d-mask) f="$REPO/ckpt/page4d/checkpoint_mask.pt"; [[ -f "$f" ]] || f="tiny:$SEED"
                   spec="page4d-mask:$f"; win=(--window "$BB_WINDOW" --overlap "$BB_OVERLAP") ;;
    esac
    step "geometry_$fam" "$spec ${win[*]} $TARGET_WIDTH $DEVICE" \
      "$PYTHON" -m inference.run --geometry-only --source "$SCENE" --backbone "$spec" "${win[@]}" \
      --target-width "$TARGET_WIDTH" --device "$DEVICE" --out "$OUT/backbones/$fam" --overwrite -q
    BB_NAMES+=("$fam"); BB_PREDS+=("$OUT/backbones/$fam")
  done
  step backbones_eval "${BB_NAMES[*]}" \
    "$PYTHON" -m eval.geometry --pred "${BB_PREDS[@]}" --gt "$SCENE" --gt-format synthetic \
    --out "$OUT/backbones_eval" --no-error-maps -q
fi
say "pipeline time: $((SECONDS - T0)) s"

# ---------------------------------------------------------------- summary
"$PYTHON" -m scripts.demo_checks summary --out "$OUT" --backbone "$BACKBONE_DESC" --text "$TEXT_DESC"
if [[ -f "$STREAMVGGT" ]]; then
  say "see it in 4D (a viser viewer with live text queries): bash scripts/view.sh $OUT/inference"
  say "  the same fields on the scene's GROUND-TRUTH geometry: bash scripts/view.sh $OUT/inference_gt"
else
  say "see it in 4D (a viser viewer with live text queries), on the scene's GROUND-TRUTH depth and cameras (the"
  say "  random backbone's predicted geometry is meaningless): bash scripts/view.sh $OUT/inference_gt"
fi
