//! Why labels or a tuned file could not be used; all of them stop a run, since tagging with
//! the wrong labels would fill the log with answers to questions nobody asked.

use crate::Disposition;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("labels file {path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("labels file {path}, line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("labels file {path}: no labels (every line is blank or a # comment)")]
    Empty { path: String },
    #[error("classifier head {path}: {reason}")]
    Head { path: String, reason: String },
    #[error("label embeddings {path}: {reason}")]
    Learned { path: String, reason: String },
}

impl LabelError {
    pub fn disposition(&self) -> Disposition {
        Disposition::Stop
    }
}
