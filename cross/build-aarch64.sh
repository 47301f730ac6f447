#!/usr/bin/env bash
# Cross-build the cliptag release binary for aarch64-unknown-linux-gnu on Debian 12 x86-64
# (after cross/setup-debian-arm64.sh). Prints the binary's path.
#
#   cross/build-aarch64.sh [--profile PROFILE] [cargo args...]
#
# pkg-config reads GStreamer's arm64 .pc files from Debian's multiarch directory; the cc
# crate (SQLite, oniguruma, tract's assembly kernels) and the linker use Debian's cross
# gcc. The arm64 plugins-base development files (.pc files and unversioned .so links) come
# from Debian's package, unpacked into target/aarch64-overlay rather than installed.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [[ ${1:-} == --profile ]]; then profile=$2; shift 2; fi
target=aarch64-unknown-linux-gnu
multiarch=/usr/lib/aarch64-linux-gnu
overlay=$PWD/target/aarch64-overlay
if [[ ! -f $overlay/pkgconfig/gstreamer-video-1.0.pc ]]; then
    rm -rf "$overlay"
    mkdir -p "$overlay/deb" "$overlay/pkgconfig" "$overlay/lib"
    (cd "$overlay/deb" && apt-get download -q libgstreamer-plugins-base1.0-dev:arm64 >&2)
    dpkg-deb -x "$overlay"/deb/*.deb "$overlay/deb/root"
    cp "$overlay"/deb/root/usr/lib/aarch64-linux-gnu/pkgconfig/*.pc "$overlay/pkgconfig/"
    for link in "$overlay"/deb/root/usr/lib/aarch64-linux-gnu/*.so; do
        ln -sf "$multiarch/$(readlink "$link")" "$overlay/lib/$(basename "$link")"
    done
fi
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_LIBDIR=$overlay/pkgconfig:$multiarch/pkgconfig:/usr/share/pkgconfig
export PKG_CONFIG_SYSROOT_DIR=/
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-L native=$overlay/lib"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
cargo build --locked --profile "$profile" --target "$target" --bin cliptag "$@" >&2
dir=$profile
[[ $profile == dev ]] && dir=debug
echo "target/$target/$dir/cliptag"
