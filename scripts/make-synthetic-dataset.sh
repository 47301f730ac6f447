#!/usr/bin/env bash
# Render the synthetic video task for cliptag-tune: moving coloured patterns, one class per
# videotestsrc pattern, each clip with its own seeded colours, speed and motion, encoded
# through GStreamer (H.264 in MP4), plus dataset.csv (`path,label`, no split column: the
# tuner splits by seed).
#
#   scripts/make-synthetic-dataset.sh OUT_DIR [CLIPS_PER_CLASS] [CLASSES]
#
# Deterministic: the same arguments give the same clips (RANDOM is seeded).
set -euo pipefail
out=${1:?usage: make-synthetic-dataset.sh OUT_DIR [CLIPS_PER_CLASS] [CLASSES]}
per_class=${2:-10}
classes=${3:-8}
mkdir -p "$out"
# shellcheck source=scripts/synthetic-classes.sh
source "$(dirname "$0")/synthetic-classes.sh"
all=("${synthetic_classes[@]}")
RANDOM=42
echo "path,label" >"$out/dataset.csv.tmp"
for ((c = 0; c < classes && c < ${#all[@]}; c++)); do
    label=${all[c]%%|*}
    props=${all[c]#*|}
    slug=${label// /_}
    for ((i = 0; i < per_class; i++)); do
        fg=$(printf '0xff%02x%02x%02x' $((RANDOM % 256)) $((RANDOM % 256)) $((RANDOM % 256)))
        bg=$(printf '0xff%02x%02x%02x' $((RANDOM % 96)) $((RANDOM % 96)) $((RANDOM % 96)))
        speed=$((RANDOM % 9 - 4))
        file=$slug-$i.mp4
        if [[ ! -s $out/$file ]]; then
            # shellcheck disable=SC2086 # props is a list of properties
            gst-launch-1.0 -q videotestsrc $props foreground-color="$fg" background-color="$bg" \
                horizontal-speed="$speed" num-buffers=24 \
                ! video/x-raw,width=160,height=120,framerate=8/1,format=I420 \
                ! x264enc speed-preset=ultrafast bitrate=150 key-int-max=8 ! h264parse ! mp4mux \
                ! filesink location="$out/$file.part"
            mv "$out/$file.part" "$out/$file"
        fi
        echo "$file,$label" >>"$out/dataset.csv.tmp"
    done
done
mv "$out/dataset.csv.tmp" "$out/dataset.csv"
echo "$out/dataset.csv: $((per_class * classes)) clips, $classes classes"
