#!/usr/bin/env bash
# Benchmark: wall time and peak RSS of `cliptag run` tagging the 60 s 1280x720 H.264 test
# clip at 1 fps (60 frames, 6 windows), per model and variant. Release build.
#
#   scripts/bench-tag.sh [MODEL_DIR] [VARIANT...]      (default: models/tiny-clip fp32 quantized)
#   SELECT=cluster scripts/bench-tag.sh ...            (keyframes instead of every frame)
#   PROFILE=dev scripts/bench-tag.sh ...               (reuse the test build: deps optimised,
#                                                       cliptag itself at opt-level 1)
#
# A ViT-B/32-sized random-weight export for this: models/generate/generate.py --preset vit-b-32
# --out DIR (never committed). Figures are for the machine it runs on; nothing here asserts.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(realpath "${1:-models/tiny-clip}")
shift || true
variants=("$@")
[[ ${#variants[@]} -gt 0 ]] || variants=(fp32 quantized)
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }

profile=${PROFILE:-release}
select=${SELECT:-all}
if [[ $profile == release ]]; then
    cargo build --release --locked --bin cliptag >&2
    bin=target/release/cliptag
else
    cargo build --locked --bin cliptag >&2
    bin=target/debug/cliptag
fi
clips=target/test-clips/synthetic
bash tests/clips/make-clips.sh "$clips"
clip=$(realpath "$clips/scenes_720p_h264.mp4")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'person\ndog\ncar\na bouncing ball\na colourful test pattern\n' >"$work/labels.txt"

echo "profile $profile, keyframes select=$select, $(nproc) cores"
printf '%-40s %-9s %8s %10s %8s\n' model variant wall_s peak_rss_mb windows
for variant in "${variants[@]}"; do
    for run in 1 2 3; do
        rm -f "$work"/tags.db*
        cat >"$work/bench.toml" <<TOML
labels = "labels.txt"
database = "tags.db"
[model]
dir = "$model"
variant = "$variant"
[sampling]
fps = 1.0
[keyframes]
select = "$select"
[[source]]
name = "scenes720p"
uri = "$clip"
TOML
        /usr/bin/time -f '%e %M' -o "$work/time" "$bin" run --config "$work/bench.toml" 2>"$work/log" ||
            { cat "$work/log" >&2; exit 1; }
        read -r wall rss_kb <"$work/time"
        windows=$(grep -o 'tagged [0-9]* window' "$work/log" | grep -o '[0-9]*')
        printf '%-40s %-9s %8s %10d %8s   (run %d)\n' "$(basename "$model")" "$variant" "$wall" $((rss_kb / 1024)) "$windows" "$run"
    done
done
