//! Frozen-encoder video embeddings for the tuner, through the daemon's own stages, cached.
//!
//! Rules:
//! - A video is one window: every sampled frame goes to the configured keyframe selector,
//!   the keyframes are preprocessed as the daemon does (`clip::window_pixels`), and the video
//!   embedding is the re-normalised mean of the keyframe embeddings (paper 002's mean
//!   pooling), or one grid image's embedding with `Aggregation::Grid`.
//! - The cache key holds everything the embedding depends on: model id, sampling rate,
//!   keyframe settings, aggregation, and the video's canonical path, size and mtime. A
//!   changed file is re-decoded; a cache entry is written whole or not at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::error::TuneError;
use cliptag::classify::mean_embedding;
use cliptag::clip::{window_pixels, ClipModel, PreprocessConfig};
use cliptag::ingest::{FrameSource, GstSource, Sampling};
use cliptag::keyframes::{Aggregation, KeyframeConfig, Windower};

/// How videos become embeddings; part of the cache key.
#[derive(Debug, Clone)]
pub struct EmbedSettings {
    pub sampling: Sampling,
    pub keyframes: KeyframeConfig,
}

impl Default for EmbedSettings {
    fn default() -> Self {
        EmbedSettings {
            sampling: Sampling::Fps(1.0),
            keyframes: KeyframeConfig::default(),
        }
    }
}

impl EmbedSettings {
    fn key(&self) -> String {
        let k = &self.keyframes;
        format!(
            "sampling={:?} select={:?} k={} aggregate={:?} scene={}",
            self.sampling, k.select, k.k, k.aggregate, k.scene_threshold
        )
    }
}

/// Embeddings on disk, one small file per (model, settings, video).
pub struct EmbeddingCache {
    dir: PathBuf,
    pub hits: usize,
    pub misses: usize,
}

impl EmbeddingCache {
    pub fn new(dir: &Path) -> Result<EmbeddingCache, TuneError> {
        std::fs::create_dir_all(dir).map_err(|e| TuneError::Cache {
            path: dir.display().to_string(),
            reason: format!("cannot create: {e}"),
        })?;
        Ok(EmbeddingCache {
            dir: dir.to_path_buf(),
            hits: 0,
            misses: 0,
        })
    }

    fn entry(&self, model: &ClipModel, settings: &EmbedSettings, video: &Path) -> Option<PathBuf> {
        let canonical = video.canonicalize().ok()?;
        let meta = std::fs::metadata(&canonical).ok()?;
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos();
        let mut hash = Sha256::new();
        for part in [
            model.id.as_str(),
            &settings.key(),
            &canonical.to_string_lossy(),
            &meta.len().to_string(),
            &mtime.to_string(),
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let name: String = hash.finalize()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(self.dir.join(format!("{name}.f32")))
    }

    /// The video's embedding, from the cache or computed (and then stored).
    pub fn video_embedding(
        &mut self,
        model: &ClipModel,
        settings: &EmbedSettings,
        video: &Path,
    ) -> Result<Vec<f32>, TuneError> {
        let entry = self.entry(model, settings, video);
        if let Some(bytes) = entry.as_ref().and_then(|e| std::fs::read(e).ok()) {
            if bytes.len() == model.embedding_dim * 4 {
                self.hits += 1;
                return Ok(bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect());
            }
        }
        let embedding = video_embedding(model, settings, video)?;
        self.misses += 1;
        if let Some(entry) = entry {
            let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
            // Written aside and renamed, so an interrupted run leaves no half entry.
            let partial = entry.with_extension("partial");
            std::fs::write(&partial, bytes)
                .and_then(|()| std::fs::rename(&partial, &entry))
                .map_err(|e| TuneError::Cache {
                    path: entry.display().to_string(),
                    reason: format!("cannot write: {e}"),
                })?;
        }
        Ok(embedding)
    }
}

/// Decode, select keyframes, embed and pool one video (no cache).
pub fn video_embedding(
    model: &ClipModel,
    settings: &EmbedSettings,
    video: &Path,
) -> Result<Vec<f32>, TuneError> {
    let pixels = keyframe_pixels(&model.preprocess, settings, video)?;
    let embeddings = model.embed_pixels(&pixels)?;
    match settings.keyframes.aggregate {
        Aggregation::Grid => embeddings.into_iter().next(),
        Aggregation::Mean | Aggregation::Max => {
            mean_embedding(embeddings.iter().map(Vec::as_slice))
        }
    }
    .ok_or_else(|| TuneError::Video {
        path: video.display().to_string(),
        reason: "no keyframes".into(),
    })
}

/// The preprocessed keyframes of one video, as the daemon would feed them to CLIP: one
/// tensor per keyframe, or one grid image with `Aggregation::Grid`.
pub fn keyframe_pixels(
    recipe: &PreprocessConfig,
    settings: &EmbedSettings,
    video: &Path,
) -> Result<Vec<Vec<f32>>, TuneError> {
    let shown = video.display().to_string();
    let video_err = |reason: String| TuneError::Video {
        path: shown.clone(),
        reason,
    };
    let location = video.to_string_lossy();
    let mut source = GstSource::open(&shown, &location, settings.sampling)
        .map_err(|e| video_err(e.to_string()))?;
    // One window longer than any video: the whole clip is selected from at once.
    let mut windower = Windower::new(
        Duration::from_secs(366 * 86_400),
        settings.keyframes.selector(),
    );
    while let Some(frame) = source.next_frame().map_err(|e| video_err(e.to_string()))? {
        // A single window never closes early.
        let _ = windower.push(frame);
    }
    let window = windower
        .finish(None)
        .ok_or_else(|| video_err("no frames decoded".into()))?;
    Ok(window_pixels(
        &window.keyframe_images(),
        settings.keyframes.aggregate,
        recipe,
    ))
}
