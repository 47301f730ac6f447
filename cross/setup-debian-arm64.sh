#!/usr/bin/env bash
# Everything needed to cross-build cliptag for aarch64-unknown-linux-gnu on a Debian 12
# x86-64 machine (as root), from Debian's own packages: the arm64 architecture
# (multiarch), the cross compiler, GStreamer's arm64 development files, the Rust target,
# and qemu-user with the arm64 runtime (plugins, libav) for the emulated smoke test.
# Idempotent: nothing already there is touched.
#
# libgstreamer-plugins-base1.0-dev cannot be installed for two architectures at once in
# Debian 12 (apt would remove the native one, which the tests need): cross/build-aarch64.sh
# takes the few files it needs from the arm64 package without installing it.
set -euo pipefail

packages=(
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross
    libgstreamer1.0-dev:arm64 libgstreamer-plugins-base1.0-0:arm64
    # gstreamer-video-1.0.pc names orc in Requires.private, which pkg-config checks even
    # for a dynamic link; the plugins-base dev package that would pull it is unpacked aside
    liborc-0.4-dev:arm64
    # the emulated run: qemu-aarch64, and decoders the test clips need
    qemu-user
    gstreamer1.0-plugins-base:arm64 gstreamer1.0-plugins-good:arm64 gstreamer1.0-libav:arm64
)

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    [[ $(id -u) -eq 0 ]] || { echo "cross/setup-debian-arm64.sh: run as root to add the arm64 architecture" >&2; exit 1; }
    dpkg --add-architecture arm64
    apt-get update -q
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    [[ $(id -u) -eq 0 ]] || { echo "cross/setup-debian-arm64.sh: missing packages: ${missing[*]}" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
    rustup target add aarch64-unknown-linux-gnu
