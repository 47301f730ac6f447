//! The `[classify]` table: how many labels a window keeps, the prompt templates, and the
//! tuned files that replace parts of the zero-shot scoring.

use std::path::PathBuf;

use serde::Deserialize;

use crate::settings::{Context, Invalid, Setting};

/// CLIP's own zero-shot template, followed by a small ensemble for video frames.
/// Averaging normalised prompt embeddings is CLIP's prompt ensembling; frames from
/// cameras are often blurry or low resolution, hence those variants.
pub const DEFAULT_PROMPT_TEMPLATES: &[&str] = &[
    "a photo of a {}.",
    "a video frame of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the {}.",
];

#[derive(Debug, Clone)]
pub struct ClassifyConfig {
    pub top_k: usize,
    pub min_probability: f32,
    pub prompt_templates: Vec<String>,
    /// A probe head from `cliptag-tune probe` that scores the labels instead of the cosine
    /// softmax; its classes must be the labels file's labels.
    pub head: Option<PathBuf>,
    /// Label embeddings from `cliptag-tune prompts`, used instead of encoding the prompts of
    /// the labels they cover.
    pub label_embeddings: Option<PathBuf>,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig {
            top_k: 3,
            min_probability: 0.0,
            prompt_templates: DEFAULT_PROMPT_TEMPLATES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            head: None,
            label_embeddings: None,
        }
    }
}

/// The `[classify]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifySection {
    top_k: Option<Setting<usize>>,
    min_probability: Option<Setting<f32>>,
    prompt_templates: Option<Setting<Vec<String>>>,
    head: Option<Setting<String>>,
    label_embeddings: Option<Setting<String>>,
}

impl ClassifySection {
    pub fn validate(&self, context: &Context<'_>) -> Result<ClassifyConfig, Invalid> {
        let mut classify = ClassifyConfig::default();
        if let Some(k) = &self.top_k {
            if *k.get() == 0 {
                return Err(Invalid::at("classify.top_k", k, "expected at least 1"));
            }
            classify.top_k = *k.get();
        }
        if let Some(p) = &self.min_probability {
            let v = *p.get();
            if !(0.0..=1.0).contains(&v) {
                return Err(Invalid::at(
                    "classify.min_probability",
                    p,
                    format!("expected a probability in [0, 1], got {v}"),
                ));
            }
            classify.min_probability = v;
        }
        if let Some(t) = &self.prompt_templates {
            let templates = t.get();
            if templates.is_empty() {
                return Err(Invalid::at(
                    "classify.prompt_templates",
                    t,
                    "expected at least one template",
                ));
            }
            if let Some(bad) = templates.iter().find(|t| t.matches("{}").count() != 1) {
                return Err(Invalid::at(
                    "classify.prompt_templates",
                    t,
                    format!("template {bad:?} must contain `{{}}` exactly once"),
                ));
            }
            classify.prompt_templates = templates.clone();
        }
        if let Some(h) = &self.head {
            classify.head = Some(context.required_path("classify.head", h, "a probe head file")?);
        }
        if let Some(l) = &self.label_embeddings {
            classify.label_embeddings = Some(context.required_path(
                "classify.label_embeddings",
                l,
                "a label-embedding file",
            )?);
        }
        Ok(classify)
    }
}
