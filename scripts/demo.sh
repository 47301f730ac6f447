#!/usr/bin/env bash
# The quick-start demo: install dependencies, build cliptag, tag the synthetic demo clip
# (examples/synthetic-demo.mp4) with the bundled tiny CLIP fine-tuned on the synthetic
# pattern task (models/synthetic-clip, made by scripts/tune-synthetic.sh) into
# target/demo/tags.db, and print what was seen.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-debian.sh
cargo build --locked --bin cliptag
bin=target/debug/cliptag
"$bin" run --config examples/demo.toml
"$bin" query --config examples/demo.toml --top
