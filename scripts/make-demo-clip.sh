#!/usr/bin/env bash
# Regenerate examples/demo.mp4 (committed; 30 s, three scenes of 10 s each).
set -euo pipefail
cd "$(dirname "$0")/.."
caps=video/x-raw,width=320,height=240,framerate=25/1,format=I420
gst-launch-1.0 -q concat name=c ! videoconvert ! x264enc speed-preset=medium bframes=0 bitrate=150 key-int-max=250 \
    ! h264parse ! mp4mux faststart=true ! filesink location=examples/demo.mp4 \
    videotestsrc pattern=smpte100 num-buffers=250 ! $caps ! c. \
    videotestsrc pattern=ball num-buffers=250 ! $caps ! c. \
    videotestsrc pattern=colors horizontal-speed=4 num-buffers=250 ! $caps ! c.
