//! Tagging: turn windows into segments — CLIP on the keyframes, then the label scores.
//!
//! Rules:
//! - Runs on the inference thread only; sources hand it preprocessed [`WindowJob`]s.
//! - Windows that arrive together, from any sources, share one batched CLIP call.
//! - A window whose scene did not change since its source's last embedded window reuses
//!   that embedding (`clip_calls = 0`); the reference stays the embedded window so slow
//!   drift still adds up to a fresh embedding.

use std::collections::HashMap;

use crate::classify::{super_image, Aggregation, Aggregator, LabelSet};
use crate::clip::{preprocess, ClipError, ImageEmbedder, PreprocessConfig};
use crate::config::{mask_uri, KeyframeConfig, Selection};
use crate::keyframes::{scene_unchanged, AllFrames, ClusterSelector, KeyframeSelector, Window};
use crate::store::{NewMatch, NewSegment};

use super::now_unix;

/// A window ready for CLIP: keyframes already preprocessed (one tensor per keyframe, or a
/// single super image in grid mode).
#[derive(Debug, Clone)]
pub struct WindowJob {
    pub source: String,
    pub source_uri: String,
    pub window_start: f64,
    pub window_end: f64,
    pub sampled: usize,
    pub keyframes_ms: Vec<i64>,
    /// Cheap features of the keyframes, for the unchanged-scene check.
    pub features: Vec<Vec<f32>>,
    pub pixels: Vec<Vec<f32>>,
}

/// Preprocess a window's keyframes for the configured aggregation.
pub fn job_from_window(
    source: &str,
    source_uri: &str,
    window: Window,
    recipe: &PreprocessConfig,
    aggregation: Aggregation,
) -> WindowJob {
    let pixels = match aggregation {
        Aggregation::Grid => {
            let images: Vec<_> = window.keyframes.iter().map(|f| &f.image).collect();
            vec![preprocess(&super_image(&images, recipe.crop.0), recipe)]
        }
        Aggregation::Mean | Aggregation::Max => window
            .keyframes
            .iter()
            .map(|f| preprocess(&f.image, recipe))
            .collect(),
    };
    WindowJob {
        source: source.to_string(),
        source_uri: mask_uri(source_uri),
        window_start: window.start,
        window_end: window.end,
        sampled: window.sampled,
        keyframes_ms: window
            .keyframes
            .iter()
            .map(|f| (f.pts * 1000.0).round() as i64)
            .collect(),
        features: window.features,
        pixels,
    }
}

/// The keyframe selector the config asks for.
pub fn selector_for(config: &KeyframeConfig) -> Box<dyn KeyframeSelector> {
    match config.select {
        Selection::All => Box::new(AllFrames),
        Selection::Cluster => Box::new(ClusterSelector {
            duplicate_distance: config.scene_threshold,
            ..ClusterSelector::new(config.k)
        }),
    }
}

/// The last window of a source whose embedding was computed, for the unchanged-scene skip.
struct Reference {
    features: Vec<Vec<f32>>,
    frame_embeddings: Vec<Vec<f32>>,
    embedding: Vec<f32>,
}

/// CLIP + classification for one window; the result is what the store keeps.
pub struct Tagger<E: ImageEmbedder> {
    pub embedder: E,
    pub model_id: String,
    pub labels: LabelSet,
    pub keyframes: KeyframeConfig,
    pub top_k: usize,
    pub min_probability: f32,
    previous: HashMap<String, Reference>,
}

impl<E: ImageEmbedder> Tagger<E> {
    pub fn new(
        embedder: E,
        model_id: String,
        labels: LabelSet,
        keyframes: KeyframeConfig,
        classify: &crate::config::ClassifyConfig,
    ) -> Self {
        Tagger {
            embedder,
            model_id,
            labels,
            keyframes,
            top_k: classify.top_k,
            min_probability: classify.min_probability,
            previous: HashMap::new(),
        }
    }

    pub fn tag(&mut self, job: WindowJob) -> Result<NewSegment, ClipError> {
        let mut segments = self.tag_batch(vec![job])?;
        segments.pop().ok_or_else(|| ClipError::Inference {
            path: "window".into(),
            reason: "no segment for the window".into(),
        })
    }

    /// Tag windows that arrived together with one CLIP call for all their keyframes.
    /// Segments come back in the order of `jobs`.
    pub fn tag_batch(&mut self, jobs: Vec<WindowJob>) -> Result<Vec<NewSegment>, ClipError> {
        // Decide which windows need CLIP in arrival order: a window compares with the last
        // embedded window of its source, which may be an earlier window of this batch.
        let mut reference_features: HashMap<String, Vec<Vec<f32>>> = HashMap::new();
        let mut needs_clip = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let reference = reference_features
                .get(&job.source)
                .or_else(|| self.previous.get(&job.source).map(|r| &r.features));
            let unchanged = self.keyframes.skip_unchanged
                && reference.is_some_and(|f| {
                    scene_unchanged(f, &job.features, self.keyframes.scene_threshold)
                });
            if !unchanged {
                reference_features.insert(job.source.clone(), job.features.clone());
            }
            needs_clip.push(!unchanged);
        }
        let pixels: Vec<Vec<f32>> = jobs
            .iter()
            .zip(&needs_clip)
            .filter(|(_, n)| **n)
            .flat_map(|(j, _)| j.pixels.iter().cloned())
            .collect();
        let mut embeddings = if pixels.is_empty() {
            Vec::new()
        } else {
            self.embedder.embed_pixels(&pixels)?
        }
        .into_iter();

        let mut segments = Vec::with_capacity(jobs.len());
        for (job, needs_clip) in jobs.into_iter().zip(needs_clip) {
            let mut clip_calls = 0;
            if needs_clip {
                let frame_embeddings: Vec<Vec<f32>> =
                    embeddings.by_ref().take(job.pixels.len()).collect();
                clip_calls = frame_embeddings.len() as u32;
                let embedding = self
                    .keyframes
                    .aggregate
                    .aggregate(&frame_embeddings)
                    .unwrap_or_default();
                self.previous.insert(
                    job.source.clone(),
                    Reference {
                        features: job.features.clone(),
                        frame_embeddings,
                        embedding,
                    },
                );
            }
            segments.push(self.segment_for(job, clip_calls)?);
        }
        Ok(segments)
    }

    /// Forget a source's reference window (it reconnected: the scene may be another).
    pub fn forget(&mut self, source: &str) {
        self.previous.remove(source);
    }

    fn segment_for(&self, job: WindowJob, clip_calls: u32) -> Result<NewSegment, ClipError> {
        let reference = self
            .previous
            .get(&job.source)
            .ok_or_else(|| ClipError::Inference {
                path: job.source.clone().into(),
                reason: "no embedding for the window".into(),
            })?;
        let scores = match self.keyframes.aggregate {
            Aggregation::Max => self.labels.score_max(&reference.frame_embeddings),
            Aggregation::Mean | Aggregation::Grid => self.labels.score(&reference.embedding),
        };
        let matches = scores
            .into_iter()
            .take(self.top_k)
            .filter(|s| s.probability >= self.min_probability)
            .map(|s| NewMatch {
                label: s.label,
                rank: s.rank,
                cosine: s.cosine,
                probability: s.probability,
            })
            .collect();
        Ok(NewSegment {
            source: job.source,
            source_uri: job.source_uri,
            model_id: self.model_id.clone(),
            start_ms: (job.window_start * 1000.0).round() as i64,
            end_ms: (job.window_end * 1000.0).round() as i64,
            wall_time: now_unix(),
            frame_count: job.sampled as u32,
            keyframes_ms: job.keyframes_ms,
            clip_calls,
            embedding: reference.embedding.clone(),
            matches,
        })
    }
}
