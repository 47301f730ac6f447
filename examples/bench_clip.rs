//! The tract side of `scripts/bench-clip.sh`: a worker that keeps a model loaded and times
//! our own encoder path (`ClipModel::embed_pixels` / `embed_texts`, the calls the daemon
//! makes) on fixed inputs, one command per stdin line, so the driver can interleave it with
//! onnxruntime round by round.
//!
//! Start: `bench_clip --model DIR --threads N --inputs DIR` writes the shared inputs
//! (`pixels.f32` + `inputs.json` with shapes, captions and their token ids) and prints
//! `ready`. Commands:
//! - `load VARIANT` (`fp32` | `quantized`) → `loaded MS`
//! - `TOWER VARIANT BATCH ITERS` (`vision` | `text`) → `times MS...` then `embedding F...`
//!   (the first item's, for the driver's cross-check)
//! - `rss` → `rss MB` (peak resident set so far)

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use cliptag::clip::ClipModel;
use cliptag::clip::ModelVariant;

const CAPTIONS: [&str; 8] = [
    "a photo of a dog.",
    "a person carrying a ladder",
    "a red car parked in a driveway at night",
    "a video frame of a cat on the sofa.",
    "an empty street in the rain",
    "a delivery van stopping in front of the house",
    "two people talking near the door",
    "a bicycle leaning against a fence",
];
const MAX_BATCH: usize = 8;

fn main() -> Result<()> {
    let mut model_dir = None;
    let mut threads = 0usize;
    let mut inputs = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--model" => model_dir = args.next().map(PathBuf::from),
            "--threads" => threads = args.next().context("--threads N")?.parse()?,
            "--inputs" => inputs = args.next().map(PathBuf::from),
            other => bail!("unknown argument {other:?}"),
        }
    }
    let model_dir = model_dir.context("--model DIR")?;
    let inputs = inputs.context("--inputs DIR")?;

    let mut models: HashMap<String, ClipModel> = HashMap::new();
    let first = ClipModel::load(&model_dir, ModelVariant::Fp32, threads)?;
    let side = first.preprocess.crop;
    let item = 3 * side.0 as usize * side.1 as usize;
    // Pixel values of a normalised image lie within about ±2.2.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let pixels: Vec<Vec<f32>> = (0..MAX_BATCH)
        .map(|_| {
            (0..item)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
                })
                .collect()
        })
        .collect();
    std::fs::create_dir_all(&inputs)?;
    let bytes: Vec<u8> = pixels
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(inputs.join("pixels.f32"), bytes)?;
    let ids: Vec<Vec<u32>> = CAPTIONS
        .iter()
        .map(|c| first.tokenize(c))
        .collect::<Result<_, _>>()?;
    let meta = serde_json::json!({
        "pixels_shape": [MAX_BATCH, 3, side.1, side.0],
        "captions": CAPTIONS,
        "ids": ids,
        "pad_id": first.tokenizer.pad_id(),
    });
    std::fs::write(inputs.join("inputs.json"), meta.to_string())?;
    models.insert("fp32".into(), first);
    let captions: Vec<String> = CAPTIONS.iter().map(|s| s.to_string()).collect();

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["load", variant] => {
                let started = Instant::now();
                let v = variant_of(variant)?;
                let m = ClipModel::load(&model_dir, v, threads)?;
                models.insert(variant.to_string(), m);
                writeln!(out, "loaded {:.1}", started.elapsed().as_secs_f64() * 1e3)?;
            }
            ["rss"] => writeln!(out, "rss {:.1}", peak_rss_mb())?,
            [tower, variant, batch, iters] => {
                let model = models
                    .get(*variant)
                    .with_context(|| format!("variant {variant} not loaded"))?;
                let batch: usize = batch.parse()?;
                let iters: usize = iters.parse()?;
                let mut times = Vec::with_capacity(iters);
                let mut first_embedding = Vec::new();
                for _ in 0..iters {
                    let started = Instant::now();
                    first_embedding = match *tower {
                        "vision" => model.embed_pixels(&pixels[..batch])?.swap_remove(0),
                        "text" => model.embed_texts(&captions[..batch])?.swap_remove(0).1,
                        other => bail!("unknown tower {other:?}"),
                    };
                    times.push(started.elapsed().as_secs_f64() * 1e3);
                }
                let join = |v: &[f64]| {
                    v.iter()
                        .map(|x| format!("{x:.4}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                writeln!(out, "times {}", join(&times))?;
                let e: Vec<f64> = first_embedding.iter().map(|&x| x as f64).collect();
                writeln!(out, "embedding {}", join(&e))?;
            }
            _ => bail!("unknown command {line:?}"),
        }
        out.flush()?;
    }
    Ok(())
}

fn variant_of(name: &str) -> Result<ModelVariant> {
    Ok(match name {
        "fp32" => ModelVariant::Fp32,
        "quantized" => ModelVariant::Quantized,
        other => bail!("unknown variant {other:?}"),
    })
}

/// VmHWM from /proc: the peak resident set of this process.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
