#!/usr/bin/env bash
# Long-run benchmark of the daemon: 4 looping file sources played at their own rate plus one
# RTSP camera (the test server on loopback, killed and restarted every RESTART_EVERY
# seconds). Samples the daemon's RSS, and at the end prints the source states (frames,
# drops, reconnects) and how long each reconnect took.
#
#   scripts/bench-daemon.sh                 # 30 minutes, tiny fixture model
#   DURATION=120 MODEL=/tmp/vitb32 scripts/bench-daemon.sh
#
# Env: MALLOC_ARENA_MAX (passed through; cliptag sets 2 itself when unset), DURATION (s, 1800), INTERVAL (s between RSS samples, 60), RESTART_EVERY (s, 300;
# 0 = never), MODEL (models/tiny-clip), PROFILE (dev), FPS (1.0), WINDOW (10.0).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-1800}
INTERVAL=${INTERVAL:-60}
RESTART_EVERY=${RESTART_EVERY:-300}
MODEL=$(realpath "${MODEL:-models/tiny-clip}")
PROFILE=${PROFILE:-dev}
FPS=${FPS:-1.0}
WINDOW=${WINDOW:-10.0}
case "$PROFILE" in dev) outdir=target/debug ;; *) outdir=target/$PROFILE ;; esac

cargo build --quiet --profile "$PROFILE" --bin cliptag --example rtsp_test_server
clips=$(realpath target/test-clips/synthetic)
bash tests/clips/make-clips.sh "$clips" >/dev/null

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
printf 'a person\na car\ncolour bars\na ball\na dog\n' >"$work/labels.txt"
{
    printf 'labels = "labels.txt"\ndatabase = "tags.db"\n\n[model]\ndir = "%s"\n\n' "$MODEL"
    printf '[sampling]\nfps = %s\n\n[window]\nseconds = %s\n\n' "$FPS" "$WINDOW"
    printf '[[source]]\nname = "camera"\nuri = "rtsp://bench:secret@127.0.0.1:%s/test"\n\n' "$port"
    i=0
    for clip in scenes_720p_h264.mp4 three_scenes_10s.mp4 h264_5994.mp4 vp9.webm; do
        i=$((i + 1))
        printf '[[source]]\nname = "file%s"\nuri = "%s/%s"\nloop = true\nrealtime = true\n\n' \
            "$i" "$clips" "$clip"
    done
} >"$work/cliptag.toml"

server() {
    "$outdir/examples/rtsp_test_server" --port "$port" --clip "$clips/scenes_720p_h264.mp4" \
        >"$work/server.out" 2>>"$work/server.err" &
    server_pid=$!
}
server
"$outdir/cliptag" run --config "$work/cliptag.toml" 2>"$work/daemon.log" &
daemon=$!

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
start=$(date +%s)
next_restart=$((start + RESTART_EVERY))
sleep 20 # model load and first windows
rss_start=$(rss_mb "$daemon")
rss_max=$rss_start
echo "t_s rss_mb"
echo "20 $rss_start"
while :; do
    now=$(date +%s)
    elapsed=$((now - start))
    [[ $elapsed -ge $DURATION ]] && break
    if [[ $RESTART_EVERY -gt 0 && $now -ge $next_restart ]]; then
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        sleep 3
        server
        next_restart=$((now + RESTART_EVERY))
    fi
    sleep "$INTERVAL"
    kill -0 "$daemon" 2>/dev/null || { echo "daemon died; log:"; tail -20 "$work/daemon.log"; exit 1; }
    rss=$(rss_mb "$daemon")
    rss_max=$(awk -v a="$rss" -v b="$rss_max" 'BEGIN {print (a > b) ? a : b}')
    echo "$(($(date +%s) - start)) $rss"
done
rss_end=$(rss_mb "$daemon")
kill -TERM "$daemon"
wait "$daemon" && code=0 || code=$?
echo
"$outdir/cliptag" status --config "$work/cliptag.toml"
echo
echo "reconnects (seconds from losing the camera to its next frame):"
grep -oE 'down_s=[0-9.]+' "$work/daemon.log" | sed 's/down_s=/  /' || echo "  none"
grep -c "panicked" "$work/daemon.log" >/dev/null && echo "PANIC in log" || true
echo
echo "duration_s=$DURATION rss_start_mb=$rss_start rss_end_mb=$rss_end rss_max_mb=$rss_max exit=$code"
