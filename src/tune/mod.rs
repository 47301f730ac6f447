//! Tune (workstation only, feature `tune`): adapt CLIP to a user's own labelled videos and
//! write files the daemon loads.
//!
//! ```text
//!                       ┌► clip (frozen, tract) ► cache ─┬► probe   → head file
//!  dataset.csv ► ingest ► keyframes ► preprocess         ├► prompts → label embeddings
//!  (the daemon's own stages, one code path)              └► eval    → metrics, CSV
//!                       └► model (candle) ► finetune → HF weights ► export → model dir
//!                                   (finetune, prompts) ► curves → CSV + PNG
//! ```
//!
//! Rules:
//! - Videos go through the daemon's ingest, preprocessing and keyframe stages, so what is
//!   trained matches what the daemon will compute.
//! - Frozen-encoder embeddings are cached on disk, keyed by model id, sampling, keyframe
//!   settings and the file's identity; a second run decodes nothing.
//! - Everything random (splits, shot subsets, epoch order, dropped patches) is seeded; the
//!   same inputs give the same outputs.
//! - Every file written for the daemon names the model id it belongs to, or is a model
//!   directory of its own.

pub mod curves;
pub mod dataset;
pub mod embed;
pub mod eval;
pub mod export;
pub mod finetune;
pub mod model;
pub mod probe;
pub mod prompts;

pub use dataset::{Dataset, Example, Split, TextKind};
pub use embed::{EmbedSettings, EmbeddingCache};
pub use probe::{Labelled, LogisticRegression, ProbeReport};
pub use prompts::{LearnedEmbeddings, PromptSettings};

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
    #[error("training: {0}")]
    Training(String),
    #[error("model {path}: {reason}")]
    Model { path: String, reason: String },
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

use crate::classify::{
    expand_labels, LabelSet, LearnedLabel, LearnedLabels, ProbeHead, LEARNED_LABELS_FORMAT,
    PROBE_HEAD_FORMAT,
};
use crate::clip::ClipModel;

/// A dataset's video embeddings by split, through the cache.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedDataset {
    pub train: Labelled,
    pub val: Labelled,
    pub test: Labelled,
    /// Videos that could not be decoded, with the reason; they are left out.
    pub skipped: Vec<String>,
}

/// Embed every video of the dataset; undecodable videos are skipped with a warning, and
/// each split must keep at least one video.
pub fn embed_dataset(
    model: &ClipModel,
    dataset: &Dataset,
    settings: &EmbedSettings,
    cache: &mut EmbeddingCache,
) -> Result<EmbeddedDataset, TuneError> {
    let mut out = EmbeddedDataset::default();
    for example in &dataset.examples {
        match cache.video_embedding(model, settings, &example.path) {
            Ok(embedding) => {
                let set = match example.split {
                    Split::Train => &mut out.train,
                    Split::Val => &mut out.val,
                    Split::Test => &mut out.test,
                };
                set.x.push(embedding);
                set.y.push(example.class);
            }
            Err(e) if e.disposition() == Disposition::Skip => {
                tracing::warn!("skipped: {e}");
                out.skipped.push(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
    for (split, set) in [
        (Split::Train, &out.train),
        (Split::Val, &out.val),
        (Split::Test, &out.test),
    ] {
        if set.y.is_empty() {
            return Err(TuneError::Dataset {
                path: dataset.csv.display().to_string(),
                reason: format!(
                    "no usable video in the {} split; tuning needs train, val and test videos",
                    split.name()
                ),
            });
        }
    }
    Ok(out)
}

/// The classes' zero-shot embeddings: prompt ensembles as the daemon builds them.
pub fn zero_shot_embeddings(
    model: &ClipModel,
    classes: &[String],
    templates: &[String],
) -> Result<Vec<Vec<f32>>, TuneError> {
    let labels = expand_labels(classes, templates);
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
    Ok(set.embeddings)
}

/// What `cliptag-tune probe` produced.
#[derive(Debug, Clone)]
pub struct ProbeOutcome {
    pub report: ProbeReport,
    /// The head to write: the whole-training-split fit, tied to the model id.
    pub head: ProbeHead,
    /// Zero-shot test accuracy of the same embeddings, for comparison.
    pub zero_shot_test_accuracy: f64,
}

/// Fit the probe with the λ sweep and the shot table, and compare with zero-shot.
pub fn run_probe(
    model: &ClipModel,
    dataset: &Dataset,
    embedded: &EmbeddedDataset,
    templates: &[String],
    seed: u64,
) -> Result<ProbeOutcome, TuneError> {
    let classes = dataset.classes.len();
    let report = probe::probe_report(
        &embedded.train,
        &embedded.val,
        &embedded.test,
        classes,
        seed,
    );
    let head = ProbeHead {
        format: PROBE_HEAD_FORMAT.into(),
        model_id: model.id.clone(),
        classes: dataset.classes.clone(),
        weights: report.model.weights.clone(),
        bias: report.model.bias.clone(),
    };
    let zero_shot = zero_shot_embeddings(model, &dataset.classes, templates)?;
    Ok(ProbeOutcome {
        report,
        head,
        zero_shot_test_accuracy: prompts::cosine_accuracy(&zero_shot, &embedded.test),
    })
}

/// What `cliptag-tune prompts` produced.
#[derive(Debug, Clone)]
pub struct PromptsOutcome {
    pub learned: LearnedEmbeddings,
    pub file: LearnedLabels,
    pub zero_shot_val_accuracy: f64,
    pub zero_shot_test_accuracy: f64,
    pub val_accuracy: f64,
    pub test_accuracy: f64,
}

/// Learn the label embeddings from the zero-shot ones and report both on val and test.
pub fn run_prompts(
    model: &ClipModel,
    dataset: &Dataset,
    embedded: &EmbeddedDataset,
    templates: &[String],
    settings: &PromptSettings,
) -> Result<PromptsOutcome, TuneError> {
    let zero_shot = zero_shot_embeddings(model, &dataset.classes, templates)?;
    let learned = prompts::learn(&zero_shot, &embedded.train, &embedded.val, settings);
    let file = LearnedLabels {
        format: LEARNED_LABELS_FORMAT.into(),
        model_id: model.id.clone(),
        labels: dataset
            .classes
            .iter()
            .zip(&learned.embeddings)
            .map(|(label, e)| LearnedLabel {
                label: label.clone(),
                embedding: e.clone(),
            })
            .collect(),
    };
    Ok(PromptsOutcome {
        zero_shot_val_accuracy: prompts::cosine_accuracy(&zero_shot, &embedded.val),
        zero_shot_test_accuracy: prompts::cosine_accuracy(&zero_shot, &embedded.test),
        val_accuracy: prompts::cosine_accuracy(&learned.embeddings, &embedded.val),
        test_accuracy: prompts::cosine_accuracy(&learned.embeddings, &embedded.test),
        learned,
        file,
    })
}
