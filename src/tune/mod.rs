//! Tune (workstation only, feature `tune`): adapt CLIP to a user's own labelled videos and
//! write files the daemon loads.
//!
//! ```text
//!  dataset.csv ──► videos ──► ingest ──► keyframes ──► clip (frozen) ──► cache ──► probe
//!                            (the daemon's own stages, one code path)            head file
//! ```
//!
//! Rules:
//! - Videos go through the daemon's ingest, preprocessing and keyframe stages, so a head
//!   is trained on the same embeddings the daemon will score.
//! - Frozen-encoder embeddings are cached on disk, keyed by model id, sampling, keyframe
//!   settings and the file's identity; a second run decodes nothing.
//! - Everything random (splits, shot subsets) is seeded; the same inputs give the same
//!   outputs.

pub mod dataset;
pub mod embed;
pub mod probe;

pub use dataset::{Dataset, Example, Split, TextKind};
pub use embed::{EmbedSettings, EmbeddingCache};
pub use probe::{LogisticRegression, ProbeReport};

use crate::Disposition;

#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error("dataset {path}: {reason}")]
    Dataset { path: String, reason: String },
    #[error("dataset {path}, line {line}: {reason}")]
    DatasetLine {
        path: String,
        line: u64,
        reason: String,
    },
    #[error("video {path}: {reason}")]
    Video { path: String, reason: String },
    #[error("embedding cache {path}: {reason}")]
    Cache { path: String, reason: String },
    #[error(transparent)]
    Clip(#[from] crate::clip::ClipError),
}

impl TuneError {
    pub fn disposition(&self) -> Disposition {
        match self {
            // One unreadable video does not spoil a dataset of hundreds.
            TuneError::Video { .. } => Disposition::Skip,
            TuneError::Clip(e) => e.disposition(),
            _ => Disposition::Stop,
        }
    }
}

use crate::classify::{expand_labels, LabelSet, ProbeHead, PROBE_HEAD_FORMAT};
use crate::clip::ClipModel;
use probe::Labelled;

/// What `cliptag-tune probe` produced.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub report: ProbeReport,
    /// The head to write: the whole-training-split fit, tied to the model id.
    pub head: ProbeHead,
    /// Zero-shot test accuracy of the same embeddings against the class names' prompt
    /// embeddings, for comparison.
    pub zero_shot_test_accuracy: f64,
    /// Videos that could not be decoded, with the reason; they are left out.
    pub skipped: Vec<String>,
    pub cache_hits: usize,
    pub cache_misses: usize,
}

/// Embed every video of the dataset (through the cache), fit the probe with the λ sweep
/// and the shot table, and compare with zero-shot.
pub fn run_probe(
    model: &ClipModel,
    dataset: &Dataset,
    settings: &EmbedSettings,
    cache: &mut EmbeddingCache,
    templates: &[String],
    seed: u64,
) -> Result<ProbeOutcome, TuneError> {
    let mut splits: [Labelled; 3] = Default::default();
    let mut skipped = Vec::new();
    for example in &dataset.examples {
        match cache.video_embedding(model, settings, &example.path) {
            Ok(embedding) => {
                let set = &mut splits[example.split as usize];
                set.x.push(embedding);
                set.y.push(example.class);
            }
            Err(e) if e.disposition() == Disposition::Skip => {
                tracing::warn!("skipped: {e}");
                skipped.push(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    let [train, val, test] = splits;
    let shown = dataset.csv.display().to_string();
    for (split, set) in [
        (Split::Train, &train),
        (Split::Val, &val),
        (Split::Test, &test),
    ] {
        if set.y.is_empty() {
            return Err(TuneError::Dataset {
                path: shown,
                reason: format!(
                    "no usable video in the {} split; the probe needs train, val and test videos",
                    split.name()
                ),
            });
        }
    }
    let classes = dataset.classes.len();
    let report = probe::probe_report(&train, &val, &test, classes, seed);
    let head = ProbeHead {
        format: PROBE_HEAD_FORMAT.into(),
        model_id: model.id.clone(),
        classes: dataset.classes.clone(),
        weights: report.model.weights.clone(),
        bias: report.model.bias.clone(),
    };
    let zero_shot_test_accuracy = {
        let labels = expand_labels(&dataset.classes, templates);
        let prompts: Vec<String> = labels.iter().flat_map(|l| l.prompts.clone()).collect();
        let encoded: std::collections::HashMap<String, Vec<f32>> = prompts
            .iter()
            .cloned()
            .zip(model.embed_texts(&prompts)?.into_iter().map(|(_, e)| e))
            .collect();
        let set = LabelSet::build(labels, |p| {
            encoded.get(p).cloned().ok_or(TuneError::Cache {
                path: p.to_string(),
                reason: "prompt not encoded".into(),
            })
        })?;
        probe::accuracy(
            test.x.iter().map(|x| {
                let cosines: Vec<f32> = set
                    .embeddings
                    .iter()
                    .map(|e| crate::clip::cosine(x, e))
                    .collect();
                probe::argmax(&cosines)
            }),
            &test.y,
        )
    };
    Ok(ProbeOutcome {
        report,
        head,
        zero_shot_test_accuracy,
        skipped,
        cache_hits: cache.hits,
        cache_misses: cache.misses,
    })
}
