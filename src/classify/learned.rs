//! Label embeddings learned by `cliptag-tune prompts`, loaded and checked.

use super::error::LabelError;

/// The format tag of [`LearnedLabels`] files.
pub const LEARNED_LABELS_FORMAT: &str = "cliptag-label-embeddings/1";

/// Label embeddings learned by `cliptag-tune prompts` on one model's video embeddings; the
/// daemon uses them instead of encoding those labels' prompts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedLabels {
    pub format: String,
    pub model_id: String,
    pub labels: Vec<LearnedLabel>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedLabel {
    pub label: String,
    /// Unit length.
    pub embedding: Vec<f32>,
}

impl LearnedLabels {
    pub fn load(path: &std::path::Path) -> Result<LearnedLabels, LabelError> {
        let err = |reason: String| LabelError::Learned {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let learned: LearnedLabels = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "not a label-embedding file (JSON written by cliptag-tune prompts): {e}"
            ))
        })?;
        if learned.format != LEARNED_LABELS_FORMAT {
            return Err(err(format!(
                "format {:?}, expected {LEARNED_LABELS_FORMAT:?}",
                learned.format
            )));
        }
        let dim = learned.labels.first().map_or(0, |l| l.embedding.len());
        if dim == 0
            || learned
                .labels
                .iter()
                .any(|l| l.embedding.len() != dim || l.embedding.iter().any(|v| !v.is_finite()))
        {
            return Err(err(
                "expected one finite embedding of the same length per label".into(),
            ));
        }
        Ok(learned)
    }

    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    pub fn get(&self, label: &str) -> Option<&[f32]> {
        self.labels
            .iter()
            .find(|l| l.label == label)
            .map(|l| l.embedding.as_slice())
    }
}
