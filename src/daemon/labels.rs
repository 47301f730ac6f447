//! The label set a run scores with: the labels file expanded into prompts, each prompt's
//! embedding from the database's cache or the text tower (released once done), and the
//! tuned files that replace parts of it, each checked against the running model.

use std::path::Path;

use super::error::RunError;
use crate::classify::{
    expand_labels, load_labels, ClassifyConfig, LabelError, LabelSet, LearnedLabels, ProbeHead,
};
use crate::clip::{ClipError, ClipModel};
use crate::store::{LabelRecord, Store, StoreWriter};

/// Labels with embeddings, using and filling the store's per-prompt cache.
/// Returns the label set and how many prompts had to be encoded.
pub fn prepare_labels(
    model: &ClipModel,
    store: &Store,
    writer: &StoreWriter,
    labels_path: &Path,
    classify: &ClassifyConfig,
) -> Result<(LabelSet, usize), RunError> {
    // The head first: a wrong one should stop before any text is encoded.
    let head = classify
        .head
        .as_deref()
        .map(|path| load_head(path, &model.id))
        .transpose()?;
    let learned = classify
        .label_embeddings
        .as_deref()
        .map(|path| load_learned_labels(path, &model.id))
        .transpose()?;
    let labels = expand_labels(&load_labels(labels_path)?, &classify.prompt_templates);
    let mut prompts: Vec<String> = labels
        .iter()
        .flat_map(|l| l.prompts.iter().cloned())
        .collect();
    prompts.sort();
    prompts.dedup();
    let mut cache = store.cached_text_embeddings(&model.id, &prompts)?;
    let missing: Vec<String> = prompts
        .iter()
        .filter(|p| !cache.contains_key(*p))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let encoded = model.embed_texts(&missing);
        model.release_text_encoder();
        let encoded = encoded?;
        let fresh: Vec<(String, Vec<f32>)> = missing
            .iter()
            .cloned()
            .zip(encoded.into_iter().map(|(_, e)| e))
            .collect();
        writer.put_text_embeddings(&model.id, fresh.clone())?;
        cache.extend(fresh);
    }
    let mut set = LabelSet::build(labels, |p| {
        cache.get(p).cloned().ok_or_else(|| ClipError::Tokenize {
            text: p.to_string(),
            reason: "prompt embedding missing".into(),
        })
    })?;
    if let Some((path, learned)) = &learned {
        for (label, embedding) in set.labels.iter().zip(set.embeddings.iter_mut()) {
            if let Some(e) = learned.get(&label.text) {
                if e.len() != embedding.len() {
                    return Err(LabelError::Learned {
                        path: path.display().to_string(),
                        reason: format!(
                            "embeddings of dimension {}, the model's have {}",
                            e.len(),
                            embedding.len()
                        ),
                    }
                    .into());
                }
                *embedding = crate::clip::l2_normalized(e.to_vec());
            }
        }
        let unused: Vec<&str> = learned
            .labels
            .iter()
            .map(|l| l.label.as_str())
            .filter(|l| !set.labels.iter().any(|s| s.text == *l))
            .collect();
        if !unused.is_empty() {
            tracing::warn!(file = %path.display(), ?unused, "learned label embeddings for labels not in the labels file are not used");
        }
    }
    if let (Some((path, head)), Some(dim)) = (head, set.embeddings.first().map(Vec::len)) {
        if head.dim() != dim {
            return Err(LabelError::Head {
                path: path.display().to_string(),
                reason: format!(
                    "weights of dimension {}, the model's embeddings have {dim}",
                    head.dim()
                ),
            }
            .into());
        }
        set.head = Some(head.for_labels(&set.labels, path)?);
    }
    let records = set
        .labels
        .iter()
        .zip(&set.embeddings)
        .map(|(l, e)| LabelRecord {
            text: l.text.clone(),
            prompts: l.prompts.clone(),
            embedding: e.clone(),
        })
        .collect();
    writer.set_labels(&model.id, records)?;
    Ok((set, missing.len()))
}

/// A probe head, refused unless it was trained on this model's embeddings.
fn load_head<'a>(path: &'a Path, model_id: &str) -> Result<(&'a Path, ProbeHead), RunError> {
    let head = ProbeHead::load(path)?;
    match other_model(&head.model_id, model_id) {
        Some(reason) => Err(LabelError::Head {
            path: path.display().to_string(),
            reason,
        }
        .into()),
        None => Ok((path, head)),
    }
}

/// Learned label embeddings, refused unless they were learned on this model's embeddings.
fn load_learned_labels<'a>(
    path: &'a Path,
    model_id: &str,
) -> Result<(&'a Path, LearnedLabels), RunError> {
    let learned = LearnedLabels::load(path)?;
    match other_model(&learned.model_id, model_id) {
        Some(reason) => Err(LabelError::Learned {
            path: path.display().to_string(),
            reason,
        }
        .into()),
        None => Ok((path, learned)),
    }
}

/// Why a tuned file made for `file_model` does not fit a daemon running `model_id`.
pub fn other_model(file_model: &str, model_id: &str) -> Option<String> {
    (file_model != model_id).then(|| {
        format!(
            "made from embeddings of model {file_model}, but this daemon runs model {model_id} (same directory and variant as when it was tuned?)"
        )
    })
}

/// What a run with `config` would do about labels: each label of the labels file as it
/// stands now, with how many of its prompts the database's cache already holds for the
/// model the daemon would load (no model is loaded; its id is a hash of its files).
pub struct LabelsPlan {
    pub model_id: String,
    pub labels: Vec<(crate::classify::Label, usize)>,
}

pub fn labels_plan(config: &super::config::Config) -> Result<LabelsPlan, RunError> {
    let labels = expand_labels(
        &load_labels(&config.labels_path)?,
        &config.classify.prompt_templates,
    );
    // The files the daemon would load: its device decides what variant "auto" means.
    let device =
        crate::clip::device::resolve(config.model.device).unwrap_or(crate::clip::Device::Cpu);
    let model_id = crate::clip::model_id(
        &config.model.dir,
        device.variant(config.model.variant),
        config.model.layout.forced(),
    )?;
    let cached = if config.database.is_file() {
        let prompts: Vec<String> = labels.iter().flat_map(|l| l.prompts.clone()).collect();
        Store::open_existing(&config.database)?.cached_text_embeddings(&model_id, &prompts)?
    } else {
        Default::default()
    };
    let labels = labels
        .into_iter()
        .map(|l| {
            let n = l.prompts.iter().filter(|p| cached.contains_key(*p)).count();
            (l, n)
        })
        .collect();
    Ok(LabelsPlan { model_id, labels })
}
