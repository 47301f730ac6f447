#!/usr/bin/env bash
# Build cliptag for aarch64 and run it under qemu-user (after cross/setup-debian-arm64.sh):
# `--version`, `model check` on the fixture model, and `embed` on the demo clip through
# arm64 GStreamer, whose embeddings must match the x86-64 build's (cosine ≥ 0.9999).
#
#   cross/smoke-aarch64.sh [--profile PROFILE]     (default: release)
#
# CLIPTAG_HOST_BIN: the x86-64 binary to compare with (the test suite passes the one its
# workspace build already made); without it the host binary is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [[ ${1:-} == --profile ]]; then profile=$2; fi
bin=$(cross/build-aarch64.sh --profile "$profile")
host=${CLIPTAG_HOST_BIN:-}
if [[ -z $host ]]; then
    cargo build --locked --profile "$profile" --bin cliptag >&2
    dir=$profile
    [[ $profile == dev ]] && dir=debug
    host=target/$dir/cliptag
fi
ls -l "$bin" | awk '{printf "aarch64 binary: %s, %.1f MB\n", $9, $5 / 1e6}'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The arm64 plugins, in a registry of their own; scanned in-process, since the plugin
# scanner GStreamer would fork is an arm64 program that only qemu can run.
export GST_PLUGIN_SYSTEM_PATH_1_0=/usr/lib/aarch64-linux-gnu/gstreamer-1.0
export GST_REGISTRY_1_0=$work/registry-arm64.bin
export GST_REGISTRY_FORK=no
arm() { QEMU_LD_PREFIX=/ qemu-aarch64 "$bin" "$@"; }

readelf -h "$bin" | grep -q "Machine:.*AArch64" || { echo "$bin is not an aarch64 binary" >&2; exit 1; }
arm --version
arm model check --model models/tiny-clip --variant fp32 | tail -4
clip=examples/demo.mp4
arm embed --model models/tiny-clip --variant fp32 --threads 2 --fps 0.5 "$clip" >"$work/arm.jsonl"
env -u GST_PLUGIN_SYSTEM_PATH_1_0 -u GST_REGISTRY_1_0 -u GST_REGISTRY_FORK \
    "$host" embed --model models/tiny-clip --variant fp32 --threads 2 --fps 0.5 "$clip" >"$work/x86.jsonl"
python3 - "$work/arm.jsonl" "$work/x86.jsonl" <<'PY'
import json, math, sys
arm = [json.loads(l) for l in open(sys.argv[1])]
x86 = [json.loads(l) for l in open(sys.argv[2])]
assert len(arm) == len(x86) > 0, f"aarch64 gave {len(arm)} frames, x86-64 {len(x86)}"
worst = 1.0
for a, b in zip(arm, x86):
    assert a["pts"] == b["pts"], (a["pts"], b["pts"])
    ea, eb = a["embedding"], b["embedding"]
    cos = sum(x * y for x, y in zip(ea, eb)) / math.sqrt(sum(x * x for x in ea) * sum(y * y for y in eb))
    worst = min(worst, cos)
print(f"aarch64 vs x86-64: {len(arm)} frames of {arm[0]['source']}, worst cosine {worst:.6f}")
sys.exit(0 if worst >= 0.9999 else 1)
PY
