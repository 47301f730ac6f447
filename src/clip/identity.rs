//! A model's id: the content hash of its two ONNX files, stored with every embedding. The
//! same weights moved elsewhere are the same model; different weights at the same path are
//! not, so a database never mixes two models' vectors unnoticed.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::ClipError;
use super::layout::{locate, Layout};
use super::options::ModelVariant;

/// Hex SHA-256 of the concatenated files (the first 16 bytes: plenty to tell models apart).
pub fn hash_files(paths: &[&Path]) -> Result<String, ClipError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in paths {
        let bad = |e: std::io::Error| ClipError::BadFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut f = std::fs::File::open(path).map_err(bad)?;
        loop {
            let n = f.read(&mut buf).map_err(bad)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    let digest = hasher.finalize();
    Ok(digest.iter().take(16).map(|b| format!("{b:02x}")).collect())
}

/// The id a model's embeddings are stored under: a hash of its two ONNX files, computed
/// without loading them into tract.
pub fn model_id(
    dir: &Path,
    variant: ModelVariant,
    layout: Option<Layout>,
) -> Result<String, ClipError> {
    let spec = locate(dir, variant, layout)?;
    hash_files(&[&spec.vision, &spec.text])
}
