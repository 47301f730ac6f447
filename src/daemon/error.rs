//! Why a run of the daemon failed, and what systemd should do about it.

use crate::classify::LabelError;
use crate::clip::ClipError;
use crate::ingest::IngestError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Clip(#[from] ClipError),
    #[error(transparent)]
    Labels(#[from] LabelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("database {db} already holds segments from model {existing}, and the configured model is {new}; embeddings of different models cannot be compared. Start a new model generation with --new-model-generation (old segments stay queryable) or use another database")]
    ModelChanged {
        db: String,
        existing: String,
        new: String,
    },
    #[error("no source could be processed")]
    NothingProcessed,
    #[error("config file {config}: no [[source]] is configured; add a camera or a file to tag")]
    NoSources { config: String },
    #[error("the inference thread panicked")]
    WorkerPanicked,
    #[error("database {database}: stopped while waiting for room on its disk; nothing was tagged")]
    StoppedWaitingForRoom { database: String },
}

impl RunError {
    pub fn disposition(&self) -> crate::Disposition {
        match self {
            RunError::Clip(e) => e.disposition(),
            RunError::Labels(e) => e.disposition(),
            RunError::Store(e) => e.disposition(),
            RunError::Ingest(e) => e.disposition(),
            RunError::ModelChanged { .. }
            | RunError::NothingProcessed
            | RunError::NoSources { .. } => crate::Disposition::Stop,
            // Still no room: a restart (if systemd makes one) waits again.
            RunError::WorkerPanicked | RunError::StoppedWaitingForRoom { .. } => {
                crate::Disposition::Retry
            }
        }
    }
}
