#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): dependencies, formatting,
# then every test of the workspace (real GStreamer, real SQLite, real tract, real clips),
# built once with the `cuda` feature (it needs no toolkit to build; without a GPU its device
# tests check the fallback to the CPU), and the aarch64 build run under qemu-user. Ends
# with one summary line over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
cargo fmt --all --check
# The service unit: `systemd-analyze verify` clean and exposure score ≤ 2.5.
bash scripts/check-systemd.sh
# A fresh clone builds once: incremental caches would only cost disk.
export CARGO_INCREMENTAL=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# One build of every target (the daemon tests spawn examples/rtsp_test_server, which
# `cargo test` alone would build only as a test harness), then every test binary.
cargo build --locked --workspace --features cliptag/cuda --all-targets 2>&1 | tee "$log" &&
    cargo test --locked --workspace --features cliptag/cuda 2>&1 | tee -a "$log" &&
    # The aarch64 build under qemu-user, compared with this machine's embeddings.
    { bash cross/setup-debian-arm64.sh &&
        CLIPTAG_HOST_BIN=target/debug/cliptag bash cross/smoke-aarch64.sh --profile dev; } 2>&1 |
    grep -v '^ *Compiling ' | tee -a "$log"
status=${PIPESTATUS[0]}
set -e
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
echo "summary: $passed passed, $failed failed"
exit "$status"
