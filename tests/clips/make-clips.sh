#!/usr/bin/env bash
# Generate cliptag's synthetic test clips with gst-launch-1.0.
#
#   tests/clips/make-clips.sh OUT_DIR
#
# Writes every clip plus OUT_DIR/clips.json (the manifest the Rust tests read) and the
# marker OUT_DIR/.complete-v1. Idempotent: returns at once when the marker exists.
# Safe to run concurrently: the clips are generated in a temporary directory next to
# OUT_DIR and renamed into place at the end; a lock (flock, when available) makes later
# callers wait for the first one instead of generating the same clips again, and the
# rename-and-check at the end keeps the result whole even without the lock.
#
# Needs: bash, coreutils, gst-launch-1.0 with plugins base/good/bad/ugly
# (Debian: gstreamer1.0-tools gstreamer1.0-plugins-{base,good,bad,ugly}).
# Optional: CLIPTAG_CLIPS_VERIFY=1 checks every playable clip against the manifest with
# gst-discoverer-1.0 (Debian: gstreamer1.0-plugins-base-apps) before installing it.
#
# Bump MARK (and the tests' expectations) whenever a clip or the manifest changes.

set -euo pipefail

MARK=.complete-v1

die() { printf 'make-clips.sh: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 && -n $1 ]] || die "usage: make-clips.sh OUT_DIR"
OUT=${1%/}
[[ -f $OUT/$MARK ]] && exit 0

command -v gst-launch-1.0 >/dev/null 2>&1 ||
    die "gst-launch-1.0 not found; install gstreamer1.0-tools and gstreamer1.0-plugins-{base,good,bad,ugly}"
if command -v gst-inspect-1.0 >/dev/null 2>&1; then
    missing=()
    for e in videotestsrc audiotestsrc videoconvert concat x264enc x265enc vp8enc vp9enc jpegenc \
        pngenc wavenc vorbisenc h264parse h265parse mp4mux matroskamux webmmux avimux oggmux; do
        gst-inspect-1.0 --exists "$e" 2>/dev/null || missing+=("$e")
    done
    [[ ${#missing[@]} -eq 0 ]] ||
        die "GStreamer elements missing: ${missing[*]} (Debian: gstreamer1.0-plugins-{base,good,bad,ugly})"
fi

parent=$(dirname -- "$OUT")
base=$(basename -- "$OUT")
[[ -n $base && $base != / && $base != . && $base != .. ]] || die "OUT_DIR must name a directory: $1"
mkdir -p -- "$parent"
parent=$(cd -- "$parent" && pwd -P) # absolute: the script cds into its work directory
OUT=$parent/$base

# Serialise generators. The lock file stays behind on purpose (removing it would race).
locked=0
if command -v flock >/dev/null 2>&1; then
    exec 9>"$parent/.$base.lock"
    if flock -w 900 9; then locked=1; else echo "make-clips.sh: lock wait timed out, going on without it" >&2; fi
fi
[[ -f $OUT/$MARK ]] && exit 0
replaceable() { # OUT_DIR may be replaced: absent, empty, or made by an older version of this script
    [[ ! -e $OUT ]] && return 0
    [[ -d $OUT && ! -L $OUT ]] || return 1
    [[ -z $(ls -A -- "$OUT") ]] && return 0
    compgen -G "$OUT/.complete-v*" >/dev/null
}
replaceable || die "$OUT exists but was not made by this script (no $OUT/$MARK); remove it or choose another OUT_DIR"
if [[ $locked -eq 1 ]]; then
    # Nobody else is generating: leftovers of killed runs can go.
    rm -rf -- "$parent/.$base.tmp."* "$parent/.$base.old."* 2>/dev/null || true
fi

tmp=$(mktemp -d "$parent/.$base.tmp.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd -- "$tmp"

gst() { # gst FILE PIPELINE...: run one pipeline, say which clip failed
    local file=$1; shift
    gst-launch-1.0 -q "$@" >/dev/null 2>"$tmp/.gst-err" ||
        die "gst-launch-1.0 failed for $file: $(cat "$tmp/.gst-err")"
}

# Raw-video caps for videotestsrc: caps W H FPS [extra fields]
caps() { echo "video/x-raw,format=I420,width=$1,height=$2,framerate=$3${4:+,$4}"; }

X264=(x264enc speed-preset=ultrafast)

# ---------------------------------------------------------------------------------------
# Playable clips

# 60 s, three scenes, one encoder after concat so timestamps run 0..60 s without a gap.
# x264 bitrate 400 kbit/s keeps the file at ~2-3 MB.
C720=$(caps 1280 720 30/1)
gst scenes_720p_h264.mp4 \
    concat name=c ! videoconvert ! "${X264[@]}" bitrate=400 key-int-max=60 ! h264parse ! \
    mp4mux ! filesink location=scenes_720p_h264.mp4 \
    videotestsrc pattern=smpte num-buffers=600 ! "$C720" ! c. \
    videotestsrc pattern=ball num-buffers=600 ! "$C720" ! c. \
    videotestsrc pattern=colors horizontal-speed=4 num-buffers=600 ! "$C720" ! c.

gst h264_5994.mp4 videotestsrc pattern=ball num-buffers=600 ! "$(caps 640 360 60000/1001)" ! \
    "${X264[@]}" ! h264parse ! mp4mux ! filesink location=h264_5994.mp4

gst mjpeg_5fps.avi videotestsrc pattern=ball num-buffers=50 ! "$(caps 320 240 5/1)" ! \
    jpegenc ! avimux ! filesink location=mjpeg_5fps.avi

gst h265.mkv videotestsrc pattern=ball num-buffers=250 ! "$(caps 320 240 25/1)" ! \
    x265enc speed-preset=ultrafast ! h265parse ! matroskamux ! filesink location=h265.mkv

gst vp8.webm videotestsrc pattern=ball num-buffers=250 ! "$(caps 320 240 25/1)" ! \
    vp8enc deadline=1 cpu-used=16 ! webmmux ! filesink location=vp8.webm

gst vp9.webm videotestsrc pattern=ball num-buffers=250 ! "$(caps 320 240 25/1)" ! \
    vp9enc deadline=1 cpu-used=8 ! webmmux ! filesink location=vp9.webm

gst h264.mkv videotestsrc pattern=ball num-buffers=125 ! "$(caps 320 240 25/1)" ! \
    "${X264[@]}" ! h264parse ! matroskamux ! filesink location=h264.mkv

gst h264.avi videotestsrc pattern=ball num-buffers=125 ! "$(caps 320 240 25/1)" ! \
    "${X264[@]}" ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au ! \
    avimux ! filesink location=h264.avi

# PAR 4/3 goes into the H.264 VUI and Matroska's DisplayWidth/DisplayHeight.
gst anamorphic_h264.mkv videotestsrc pattern=ball num-buffers=125 ! \
    "$(caps 480 360 25/1 pixel-aspect-ratio=4/3)" ! "${X264[@]}" ! h264parse ! matroskamux ! \
    filesink location=anamorphic_h264.mkv

# smpte100 is videotestsrc's bar pattern without the animated noise patch of pattern=smpte.
gst static_30s.mp4 videotestsrc pattern=smpte100 num-buffers=300 ! "$(caps 320 240 10/1)" ! \
    "${X264[@]}" ! h264parse ! mp4mux ! filesink location=static_30s.mp4

C240_10=$(caps 320 240 10/1)
gst three_scenes_10s.mp4 \
    concat name=c ! videoconvert ! "${X264[@]}" ! h264parse ! mp4mux ! \
    filesink location=three_scenes_10s.mp4 \
    videotestsrc pattern=red num-buffers=30 ! "$C240_10" ! c. \
    videotestsrc pattern=checkers-8 num-buffers=30 ! "$C240_10" ! c. \
    videotestsrc pattern=smpte100 num-buffers=40 ! "$C240_10" ! c.

gst still.png videotestsrc pattern=smpte100 num-buffers=1 ! video/x-raw,width=320,height=240 ! \
    videoconvert ! pngenc ! filesink location=still.png

# ---------------------------------------------------------------------------------------
# Broken / not-video files

: >empty.mp4

cat >text.mp4 <<'EOF'
This is not a video.
It is plain text with an .mp4 name, used by cliptag's tests
to check that unreadable files are reported, not fatal.
EOF

# 64 KiB of reproducible pseudo-random bytes (32-bit LCG, top byte of each step; pure bash).
s=20240601
for ((i = 0; i < 16384; i++)); do
    s=$(((s * 1664525 + 1013904223) & 0xffffffff)); a=$((s >> 24))
    s=$(((s * 1664525 + 1013904223) & 0xffffffff)); b=$((s >> 24))
    s=$(((s * 1664525 + 1013904223) & 0xffffffff)); c=$((s >> 24))
    s=$(((s * 1664525 + 1013904223) & 0xffffffff)); d=$((s >> 24))
    printf -v esc '\\x%02x\\x%02x\\x%02x\\x%02x' "$a" "$b" "$c" "$d"
    printf '%b' "$esc"
done >random.mp4
RANDOM_SHA=1ce0c0f7bfc40b9e68fd426e0bb475b03f062681ba1f1e0bcac559855933290d
[[ $(sha256sum random.mp4) == "$RANDOM_SHA "* ]] || die "random.mp4 is not the expected bytes"

gst audio_only.wav audiotestsrc num-buffers=20 samplesperbuffer=4410 ! \
    audio/x-raw,rate=44100,channels=1 ! wavenc ! filesink location=audio_only.wav
gst audio_only.ogg audiotestsrc num-buffers=20 samplesperbuffer=4410 ! \
    audio/x-raw,rate=44100,channels=1 ! audioconvert ! vorbisenc ! oggmux ! \
    filesink location=audio_only.ogg

# mp4mux without faststart writes ftyp, mdat, then moov at the very end: half the file
# has no moov at all.
gst truncated.mp4 videotestsrc pattern=ball num-buffers=250 ! "$(caps 320 240 25/1)" ! \
    "${X264[@]}" ! h264parse ! mp4mux faststart=false ! filesink location=.full.mp4
head -c "$(($(stat -c %s .full.mp4) / 2))" .full.mp4 >truncated.mp4
rm -f .full.mp4

# A whole 10 s webm cut at 50 % of its bytes: header intact, later clusters and cues gone.
gst cut_half.webm videotestsrc pattern=ball num-buffers=250 ! "$(caps 320 240 25/1)" ! \
    vp8enc deadline=1 cpu-used=16 ! webmmux ! filesink location=.full.webm
head -c "$(($(stat -c %s .full.webm) / 2))" .full.webm >cut_half.webm
rm -f .full.webm

# ---------------------------------------------------------------------------------------
# Manifest

json_str() { # JSON string literal of $1
    local s=$1
    s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}
    printf '"%s"' "$s"
}

entries=()
# clip FILE CONTAINER CODEC W H DISPLAY_W DISPLAY_H FPS DURATION_S EXPECT NOTE
clip() {
    [[ -e $1 ]] || die "manifest names $1 but it was not generated"
    entries+=("$(printf '    {"file": %s, "container": %s, "codec": %s, "width": %d, "height": %d, "display_width": %d, "display_height": %d, "fps": %s, "duration_s": %s, "expect": %s, "note": %s}' \
        "$(json_str "$1")" "$(json_str "$2")" "$(json_str "$3")" "$4" "$5" "$6" "$7" \
        "$(json_str "$8")" "$9" "$(json_str "${10}")" "$(json_str "${11}")")")
}

clip scenes_720p_h264.mp4 mp4 h264 1280 720 1280 720 30/1 60.0 ok \
    "Three scenes, cuts at 20.0 s and 40.0 s (frames 600 and 1200): 0-20 s videotestsrc pattern=smpte (colour bars; its bottom-right patch is animated noise), 20-40 s pattern=ball (white ball moving on black), 40-60 s pattern=colors scrolling left 4 px/frame (colour gradient grid). 1800 frames, keyframe at least every 60 frames, ~400 kbit/s."
clip h264_5994.mp4 mp4 h264 640 360 640 360 60000/1001 10.01 ok \
    "600 frames at 59.94 fps (600*1001/60000 = 10.01 s), pattern=ball."
clip mjpeg_5fps.avi avi mjpeg 320 240 320 240 5/1 10.0 ok \
    "50 JPEG frames at 5 fps, pattern=ball."
clip h265.mkv mkv h265 320 240 320 240 25/1 10.0 ok \
    "250 frames, x265 ultrafast, pattern=ball."
clip vp8.webm webm vp8 320 240 320 240 25/1 10.0 ok \
    "250 frames, pattern=ball."
clip vp9.webm webm vp9 320 240 320 240 25/1 10.0 ok \
    "250 frames, pattern=ball."
clip h264.mkv mkv h264 320 240 320 240 25/1 5.0 ok \
    "125 frames, pattern=ball."
clip h264.avi avi h264 320 240 320 240 25/1 5.0 ok \
    "125 frames, pattern=ball, H.264 byte-stream in AVI."
clip anamorphic_h264.mkv mkv h264 480 360 640 360 25/1 5.0 ok \
    "Coded 480x360 with pixel-aspect-ratio 4/3 (H.264 VUI and Matroska DisplayWidth/Height 640x360), so a player shows 640x360 (16:9); the ball looks round only after PAR correction. 125 frames."
clip static_30s.mp4 mp4 h264 320 240 320 240 10/1 30.0 ok \
    "300 identical frames of pattern=smpte100 (100% colour bars, no animation, no noise): nothing changes for 30 s."
clip three_scenes_10s.mp4 mp4 h264 320 240 320 240 10/1 10.0 ok \
    "Three static scenes, cuts at 3.0 s and 6.0 s (frames 30 and 60): 0-3 s solid red (pattern=red), 3-6 s black/white 8 px checkerboard (pattern=checkers-8), 6-10 s colour bars (pattern=smpte100). 100 frames."
clip still.png png png 320 240 320 240 0/1 0.0 ok \
    "A single PNG image (pattern=smpte100 colour bars); GStreamer reports it as an image with no duration and framerate 0/1."
clip empty.mp4 mp4 none 0 0 0 0 0/1 0.0 error \
    "0 bytes. GStreamer 1.22 (uridecodebin and gst-discoverer-1.0): typefind error 'Stream contains no data.' (debug: Can't typefind empty stream)."
clip text.mp4 mp4 none 0 0 0 0 0/1 0.0 error \
    "Three lines of ASCII text. GStreamer 1.22 (uridecodebin and gst-discoverer-1.0): decodebin error 'This appears to be a text file' (debug: decodebin cannot decode plain text files)."
clip random.mp4 mp4 none 0 0 0 0 0/1 0.0 error \
    "65536 pseudo-random bytes (sha256 $RANDOM_SHA, generated by make-clips.sh). GStreamer 1.22 (uridecodebin and gst-discoverer-1.0): typefind error 'Could not determine type of stream.'"
clip audio_only.wav wav none 0 0 0 0 0/1 2.0 error \
    "2 s of a 440 Hz sine, 44.1 kHz mono PCM in WAV; no video stream. gst-discoverer-1.0 succeeds (one audio stream, 2.0 s); uridecodebin exposes only an audio pad, so a video-only pipeline never gets a video pad (gst-launch ... ! videoconvert: 'Internal data stream error.', streaming stopped, reason not-linked). For cliptag: an error like 'no video stream'."
clip audio_only.ogg ogg none 0 0 0 0 0/1 2.0 error \
    "2 s of a 440 Hz sine, Vorbis in Ogg; no video stream. gst-discoverer-1.0 succeeds (one Vorbis stream, 2.0 s); uridecodebin exposes only an audio pad (gst-launch ... ! videoconvert: 'Internal data stream error.', reason not-linked). For cliptag: an error like 'no video stream'."
clip truncated.mp4 mp4 none 0 0 0 0 0/1 0.0 error \
    "10 s 320x240 25 fps H.264 MP4 written without faststart (moov at the end), cut to its first 50 % of bytes: the moov atom is missing. GStreamer 1.22 (uridecodebin and gst-discoverer-1.0): qtdemux error 'This file contains no playable streams.' (debug: no known streams found)."
clip cut_half.webm webm vp8 320 240 320 240 25/1 10.0 partial \
    "A 10 s VP8 webm (250 frames, pattern=ball) cut at 50 % of its bytes. The header still declares 10 s (duration_s, as gst-discoverer-1.0 reports), but only the first ~5 s decode (GStreamer 1.22: 124 of 250 frames, last pts 4.92 s), then a normal EOS: no error, no warning."

{
    printf '{"clips": [\n'
    for i in "${!entries[@]}"; do
        printf '%s' "${entries[$i]}"
        [[ $i -lt $((${#entries[@]} - 1)) ]] && printf ',\n' || printf '\n'
    done
    printf ']}\n'
} >clips.json

# ---------------------------------------------------------------------------------------
# Optional self-check of the playable clips against the manifest.

if [[ ${CLIPTAG_CLIPS_VERIFY:-0} == 1 ]]; then
    command -v gst-discoverer-1.0 >/dev/null 2>&1 ||
        die "CLIPTAG_CLIPS_VERIFY=1 needs gst-discoverer-1.0 (Debian: gstreamer1.0-plugins-base-apps)"
    verify() { # verify FILE W H PAR FPS DURATION_S
        local info got want
        info=$(gst-discoverer-1.0 -v "$1" 2>&1) || die "verify: gst-discoverer-1.0 failed on $1: $info"
        got=$(awk -F': ' '
            /^ *Duration:/ && !d { split($2, t, ":"); d = sprintf("%.2f", t[1] * 3600 + t[2] * 60 + t[3]) }
            /^ *Width:/ && !w { w = $2 } /^ *Height:/ && !h { h = $2 }
            /^ *Pixel aspect ratio:/ && !p { p = $2 } /^ *Frame rate:/ && !f { f = $2 }
            END { print w, h, p, f, d }' <<<"$info")
        want="$2 $3 $4 $5 $(printf '%.2f' "$6")"
        [[ $got == "$want" ]] || die "verify: $1 is '$got', manifest says '$want'"
    }
    verify scenes_720p_h264.mp4 1280 720 1/1 30/1 60
    verify h264_5994.mp4 640 360 1/1 60000/1001 10.01
    verify mjpeg_5fps.avi 320 240 1/1 5/1 10
    verify h265.mkv 320 240 1/1 25/1 10
    verify vp8.webm 320 240 1/1 25/1 10
    verify vp9.webm 320 240 1/1 25/1 10
    verify h264.mkv 320 240 1/1 25/1 5
    verify h264.avi 320 240 1/1 25/1 5
    verify anamorphic_h264.mkv 480 360 4/3 25/1 5
    verify static_30s.mp4 320 240 1/1 10/1 30
    verify three_scenes_10s.mp4 320 240 1/1 10/1 10
fi

rm -f .gst-err
touch "$MARK"

# ---------------------------------------------------------------------------------------
# Install: rename the finished directory into place. rename(2) replaces an empty OUT_DIR
# and fails on a non-empty one; if that one is complete another run won the race.
cd /
if ! mv -T -- "$tmp" "$OUT" 2>/dev/null; then
    if [[ -f $OUT/$MARK ]]; then
        exit 0 # another run finished first; the trap removes our copy
    fi
    # OUT_DIR holds something stale or incomplete: move it aside, then retry.
    replaceable || die "$OUT appeared meanwhile and was not made by this script; not touching it"
    old=$(mktemp -u "$parent/.$base.old.XXXXXX")
    mv -T -- "$OUT" "$old" 2>/dev/null || true
    if ! mv -T -- "$tmp" "$OUT" 2>/dev/null; then
        [[ -f $OUT/$MARK ]] || die "cannot move the clips into $OUT"
    fi
    rm -rf -- "$old"
fi
trap - EXIT
