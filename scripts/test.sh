#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): dependencies, formatting,
# then every test (real GStreamer, real SQLite, real tract, real clips).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
cargo fmt --check
cargo test --locked --all-targets
