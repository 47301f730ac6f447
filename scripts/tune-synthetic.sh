#!/usr/bin/env bash
# The full synthetic fine-tuning run behind README's "Fine-tuning" figures: render the
# 8-class task (scripts/make-synthetic-dataset.sh), report zero-shot, the 1–16-shot probe and
# learned prompts on the untouched tiny model, fine-tune both towers (ViFi-CLIP), export the
# result as int8 ONNX, evaluate it under tract, then run the daemon itself over the held-out
# clips and score its top labels.
#
#   scripts/tune-synthetic.sh [OUT_DIR] [--update-demo]
#
# PER_CLASS (50), EPOCHS (200) and PATCH_KEEP (1) change the run. --update-demo copies the
# tuned int8 model to models/synthetic-clip and renders examples/synthetic-demo.mp4, the
# README demo's inputs. About 15 minutes on 2 cores after the build (the dev profile is
# optimised; see Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${1:-target/synthetic}
update_demo=${2:-}
per_class=${PER_CLASS:-50}
epochs=${EPOCHS:-200}
patch_keep=${PATCH_KEEP:-1}
mkdir -p "$out"
out=$(cd "$out" && pwd)

cargo build --locked --bin cliptag && cargo build --locked -p cliptag-tune --bin cliptag-tune
bin=$repo/target/debug
scripts/make-synthetic-dataset.sh "$out/data" "$per_class" 8
# An explicit split, so the daemon step below knows the held-out clips: clip i of each
# class is test when i % 5 == 0, validation when i % 5 == 1, training otherwise (60/20/20).
awk -F, 'NR == 1 { print $0 ",split"; next }
    { i = $1; sub(/.*-/, "", i); sub(/\.mp4$/, "", i)
      print $0 "," (i % 5 == 0 ? "test" : i % 5 == 1 ? "val" : "train") }' \
    "$out/data/dataset.csv" >"$out/data/split.csv"
data=$out/data/split.csv
cut -d, -f2 "$out/data/dataset.csv" | tail -n +2 | awk '!seen[$0]++' >"$out/labels.txt"

# The daemon's settings for this task: 1 fps, 3 keyframes per 3-second clip, CLIP's
# "a photo of a {}." template (the one fine-tuning trains with).
config() { # MODEL_DIR [SOURCES]
    cat <<TOML
labels = "labels.txt"
database = "tags.db"
[model]
dir = "$1"
[sampling]
fps = 1.0
[window]
seconds = 3.0
[keyframes]
k = 3
[classify]
prompt_templates = ["a photo of a {}."]
TOML
}

echo "== untouched tiny CLIP: zero-shot, probe, learned prompts"
config "$repo/models/tiny-clip" >"$out/base.toml"
"$bin/cliptag-tune" probe --data "$data" --config "$out/base.toml" --out "$out/head.json"
"$bin/cliptag-tune" prompts --data "$data" --config "$out/base.toml" --out "$out/prompts.json" \
    --interpolation 1
"$bin/cliptag-tune" eval --data "$data" --config "$out/base.toml" --head "$out/head.json" \
    --label-embeddings "$out/prompts.json" --out-dir "$out/eval-base"

echo "== fine-tuning both towers ($epochs epochs, patch keep $patch_keep)"
rm -rf "$out/tuned" "$out/tuned-onnx"
"$bin/cliptag-tune" finetune --data "$data" --base models/tiny-clip --out "$out/tuned" \
    --epochs "$epochs" --batch 16 --learning-rate 2e-3 --patch-keep "$patch_keep" --keyframes 3
"$bin/cliptag-tune" export "$out/tuned" "$out/tuned-onnx" --int8-only
config "$out/tuned-onnx" >"$out/tuned.toml"
"$bin/cliptag-tune" eval --data "$data" --config "$out/tuned.toml" --out-dir "$out/eval-tuned"

echo "== the daemon on the held-out clips, with the exported int8 model"
daemon=$out/daemon
rm -rf "$daemon" && mkdir -p "$daemon"
cp "$out/labels.txt" "$daemon/"
{
    config "$out/tuned-onnx"
    awk -F, -v dir="$out/data" '$3 == "test" {
        name = $1; sub(/\.mp4$/, "", name)
        printf "[[source]]\nname = \"%s\"\nuri = \"%s/%s\"\n", name, dir, $1 }' "$data"
} >"$daemon/cliptag.toml"
"$bin/cliptag" run --config "$daemon/cliptag.toml" 2>"$daemon/run.log"
"$bin/cliptag" query --config "$daemon/cliptag.toml" --top --csv >"$daemon/top.csv"
# A clip's truth is its name's class: bouncing_ball-5 → "bouncing ball".
awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    { truth = $col["source"]; sub(/-[0-9]+$/, "", truth); gsub(/_/, " ", truth)
      n++; if ($col["label"] == truth) right++ }
    END { printf "daemon top-1 on %d held-out clips: %.1f%%\n", n, 100 * right / n }' \
    "$daemon/top.csv" | tee "$out/daemon-accuracy.txt"

if [[ $update_demo == --update-demo ]]; then
    rm -rf models/synthetic-clip
    cp -r "$out/tuned-onnx" models/synthetic-clip
    rm -f models/synthetic-clip/model.safetensors models/synthetic-clip/training_log.csv
    cat >models/synthetic-clip/README.md <<MD
# synthetic-clip: the README demo's model

The tiny random-weight CLIP of \`models/tiny-clip\` (same architecture as
openai/clip-vit-base-patch32, 2 layers of width 64/32), fine-tuned by \`cliptag-tune finetune\`
($epochs epochs, both towers) on the synthetic task of \`scripts/make-synthetic-dataset.sh\`:
eight kinds of moving videotestsrc pattern ($(paste -sd, "$out/labels.txt" | sed 's/,/, /g')),
$per_class clips each. Exported int8-only by \`cliptag-tune export --int8-only\`.

Made by \`scripts/tune-synthetic.sh target/synthetic --update-demo\`; do not edit by hand.
Held-out top-1 on that run: $(cat "$out/daemon-accuracy.txt").

**It knows those eight patterns and nothing else**: on real video its labels are meaningless.
MD
    scripts/make-synthetic-demo.sh examples/synthetic-demo.mp4 \
        "bouncing ball" "colour bars" "spokes" "checkerboard" "zone plate"
    cp "$out/labels.txt" examples/synthetic-labels.txt
    du -sh models/synthetic-clip examples/synthetic-demo.mp4
fi
