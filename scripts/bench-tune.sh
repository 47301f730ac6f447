#!/usr/bin/env bash
# What a workstation needs for `cliptag-tune finetune`: time per training step and peak
# memory on a ViT-B/32-sized model (random weights; speed does not depend on their values),
# on the CPU, at a small batch.
#
#   MODEL=/tmp/vitb32 scripts/bench-tune.sh
#
# MODEL: a Hugging Face CLIP directory with model.safetensors (models/generate/generate.py
# --preset vit-b-32 --out DIR writes one). Env: BATCH (videos per step, 2), FRAMES (keyframes
# per video, 4), PATCH_KEEP (0.5), STEPS (4), PROFILE (dev: dependencies, candle included, are
# built optimised in it, and the dev build is the one the test suite already has).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:?set MODEL to a Hugging Face CLIP directory, e.g. /tmp/vitb32}
BATCH=${BATCH:-2}
FRAMES=${FRAMES:-4}
PATCH_KEEP=${PATCH_KEEP:-0.5}
STEPS=${STEPS:-4}
PROFILE=${PROFILE:-dev}
case "$PROFILE" in dev) outdir=target/debug ;; *) outdir=target/$PROFILE ;; esac
cargo build --quiet --profile "$PROFILE" -p cliptag-tune --bin cliptag-tune

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# STEPS steps of BATCH training videos; 60/20/20 split, so 5/3 as many clips in all.
per_class=$(((STEPS * BATCH * 5 / 3 + 1) / 2 + 1))
bash scripts/make-synthetic-dataset.sh "$work/data" "$per_class" 2 >/dev/null
/usr/bin/time -v "$outdir/cliptag-tune" finetune --data "$work/data/dataset.csv" --base "$MODEL" \
    --out "$work/out" --epochs 1 --batch "$BATCH" --keyframes "$FRAMES" --fps 2 \
    --patch-keep "$PATCH_KEEP" 2>"$work/time.txt" | tee "$work/table.txt"
rate=$(awk '$1 == "1" {print $5}' "$work/table.txt")
peak=$(awk -F: '/Maximum resident set size/ {print $2}' "$work/time.txt")
steps=$(awk '$1 == "1" {print $2}' "$work/table.txt")
echo "finetune $(basename "$MODEL"): $steps steps of $BATCH videos x $FRAMES frames, patch keep $PATCH_KEEP:" \
    "$(awk -v r="$rate" -v b="$BATCH" 'BEGIN {printf "%.2f s/step", b / r}'), peak RSS $((peak / 1024)) MB"
