#!/usr/bin/env bash
# Benchmark: do per-keyframe embeddings find brief events that a window's mean misses?
# Renders a clip of 10 s windows of background patterns, some interrupted by 1, 2 or 3 s
# of a zone plate, and ranks the windows against the text "zone plate" by the window's
# mean embedding and by its best keyframe (examples/bench_short_events.rs), with the
# README demo's model (models/synthetic-clip, which knows these patterns).
#
#   scripts/bench-short-events.sh [MODEL_DIR]
#
# Nothing here asserts; it prints a table. Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/synthetic-clip}
out=${BENCH_DIR:-/tmp/cliptag-bench}
mkdir -p "$out"
backgrounds=("colour bars" "spokes" "moving bar" "bouncing ball" "checkerboard" "colour spectrum")
# Event seconds per window: 0 = background only.
layout=(0 1 0 2 0 3 0 0 1 0 2 0 3 0 0 1 0 2 0 3 0 0 1 0 2 0 3 0 0 0)
specs=()
for i in "${!layout[@]}"; do
    bg=${backgrounds[$((i % ${#backgrounds[@]}))]}
    e=${layout[$i]}
    if ((e == 0)); then
        specs+=("$bg:10")
    else
        before=$(((10 - e) / 2))
        specs+=("$bg:$before" "zone plate:$e" "$bg:$((10 - e - before))")
    fi
done
clip=$out/short-events.mp4
scripts/make-synthetic-demo.sh "$clip" "${specs[@]}" >&2
cargo build --release --locked --example bench_short_events >&2
commas=$(IFS=,; echo "${layout[*]}")
target/release/examples/bench_short_events "$model" "$clip" "$commas" "zone plate"
