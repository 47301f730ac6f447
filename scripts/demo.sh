#!/usr/bin/env bash
# The quick-start demo: install dependencies, build cliptag, tag the bundled demo clip with
# the bundled tiny CLIP model into target/demo/cliptag.db, and print what was seen.
# The tiny model has random weights: the pipeline is real, the labels it picks are not.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
cargo build --locked --bin cliptag
bin=target/debug/cliptag
"$bin" run --config examples/demo.toml
"$bin" query --config examples/demo.toml --top
