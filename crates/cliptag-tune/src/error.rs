//! Why tuning stopped, or which video it skipped.

use cliptag::Disposition;

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
    Clip(#[from] cliptag::clip::ClipError),
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
