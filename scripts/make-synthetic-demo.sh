#!/usr/bin/env bash
# Render the README demo clip: one segment per named class of the synthetic task
# (scripts/synthetic-classes.sh), one after another, with colours and speeds drawn from a
# seed the dataset does not use, so none of its segments is a training clip. A segment is
# 3 s long unless its class is followed by :SECONDS (whole seconds).
#
#   scripts/make-synthetic-demo.sh OUT.mp4 "bouncing ball" "colour bars:6" ...
set -euo pipefail
out=${1:?usage: make-synthetic-demo.sh OUT.mp4 LABEL...}
shift
# shellcheck source=scripts/synthetic-classes.sh
source "$(dirname "$0")/synthetic-classes.sh"
RANDOM=7
segments=()
total=0
for spec in "$@"; do
    label=${spec%%:*}
    seconds=3
    [[ $spec == *:* ]] && seconds=${spec##*:}
    [[ $seconds =~ ^[1-9][0-9]*$ ]] || {
        echo "make-synthetic-demo.sh: \"$spec\": expected CLASS or CLASS:SECONDS (whole seconds)" >&2
        exit 2
    }
    total=$((total + seconds))
    props=
    for entry in "${synthetic_classes[@]}"; do
        [[ ${entry%%|*} == "$label" ]] && props=${entry#*|}
    done
    [[ -n $props ]] || {
        echo "make-synthetic-demo.sh: no class \"$label\" in scripts/synthetic-classes.sh" >&2
        exit 2
    }
    fg=$(printf '0xff%02x%02x%02x' $((RANDOM % 256)) $((RANDOM % 256)) $((RANDOM % 256)))
    bg=$(printf '0xff%02x%02x%02x' $((RANDOM % 96)) $((RANDOM % 96)) $((RANDOM % 96)))
    speed=$((RANDOM % 9 - 4))
    # shellcheck disable=SC2206 # props is a list of properties
    segments+=(videotestsrc $props foreground-color="$fg" background-color="$bg"
        horizontal-speed="$speed" num-buffers=$((seconds * 8))
        ! video/x-raw,width=160,height=120,framerate=8/1,format=I420 ! c.)
done
gst-launch-1.0 -q concat name=c \
    ! x264enc speed-preset=ultrafast bitrate=150 key-int-max=8 ! h264parse ! mp4mux \
    ! filesink location="$out.part" "${segments[@]}"
mv "$out.part" "$out"
echo "$out: $# segments, $total s"
