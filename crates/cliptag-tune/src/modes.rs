//! The frozen-encoder modes end to end: `probe` and `prompts` trained on a session's
//! embeddings, each compared with zero-shot on the same test videos, and the file the daemon
//! loads, tied to the model id the embeddings came from.

use cliptag::classify::{
    LearnedLabel, LearnedLabels, ProbeHead, LEARNED_LABELS_FORMAT, PROBE_HEAD_FORMAT,
};
use cliptag::clip::ClipModel;

use super::dataset::Dataset;
use super::error::TuneError;
use super::probe::{probe_report, ProbeReport};
use super::prompts::{cosine_accuracy, learn, LearnedEmbeddings, PromptSettings};
use super::session::{zero_shot_embeddings, EmbeddedDataset};

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
    let report = probe_report(
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
        zero_shot_test_accuracy: cosine_accuracy(&zero_shot, &embedded.test),
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
    let learned = learn(&zero_shot, &embedded.train, &embedded.val, settings);
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
        zero_shot_val_accuracy: cosine_accuracy(&zero_shot, &embedded.val),
        zero_shot_test_accuracy: cosine_accuracy(&zero_shot, &embedded.test),
        val_accuracy: cosine_accuracy(&learned.embeddings, &embedded.val),
        test_accuracy: cosine_accuracy(&learned.embeddings, &embedded.test),
        learned,
        file,
    })
}
