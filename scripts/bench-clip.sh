#!/usr/bin/env bash
# CLIP encoder speed, tract (our path) against onnxruntime on the same files, inputs and
# threads, interleaved round by round (scripts/bench_clip.py). Never part of the tests.
#
#   scripts/bench-clip.sh            # ViT-B/32-sized exports (random weights), generated once
#   scripts/bench-clip.sh --smoke    # the tiny fixture model, 2 short rounds
#
# Env: CLIPTAG_CACHE (~/.cache/cliptag: venvs and generated models live there, outside the
# repo), MODEL (a Xenova-layout dir to use instead), THREADS (all cores), PROFILE (release),
# ROUNDS (5), ITERS (5), BATCHES (1,8). The shipped build is generic; to compare a native one:
#   RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=target/native scripts/bench-clip.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${CLIPTAG_CACHE:-$HOME/.cache/cliptag}
PROFILE=${PROFILE:-release}
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-5}
ITERS=${ITERS:-5}
BATCHES=${BATCHES:-1,8}
target_dir=${CARGO_TARGET_DIR:-target}
case "$PROFILE" in dev) outdir=$target_dir/debug ;; *) outdir=$target_dir/$PROFILE ;; esac
mkdir -p "$cache"

# onnxruntime pinned, in a venv of its own.
venv=$cache/bench-venv
if ! "$venv/bin/python" -c 'import onnxruntime, numpy' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q onnxruntime==1.31.1 numpy==2.4.6
fi

if [[ ${1:-} == --smoke ]]; then
    model=$(realpath models/tiny-clip)
    ROUNDS=2 ITERS=2
else
    model=${MODEL:-$cache/vitb32}
    if [[ ! -f $model/onnx/vision_model_quantized.onnx ]]; then
        # The fixture generator at ViT-B/32 size: torch's exporter + onnxruntime's int8.
        gen=$cache/gen-venv
        if ! "$gen/bin/python" -c 'import torch, transformers, onnxruntime' 2>/dev/null; then
            python3 -m venv "$gen"
            "$gen/bin/pip" install -q -r models/generate/requirements.txt
        fi
        "$gen/bin/python" models/generate/generate.py --preset vit-b-32 --out "$model"
    fi
fi

cargo build --quiet --locked --profile "$PROFILE" --example bench_clip
inputs=$(mktemp -d)
trap 'rm -rf "$inputs"' EXIT
echo "tract build: profile $PROFILE, RUSTFLAGS=${RUSTFLAGS:-(none: generic target)}"
"$venv/bin/python" scripts/bench_clip.py --model "$model" --threads "$THREADS" \
    --worker "$outdir/examples/bench_clip" --inputs "$inputs" \
    --rounds "$ROUNDS" --iters "$ITERS" --batches "$BATCHES" --settle-ms "${SETTLE_MS:-200}"
