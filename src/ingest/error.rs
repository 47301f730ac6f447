//! Ingest errors, and what the caller should do about each: a live source's stream error is
//! worth a retry, a broken file is skipped, GStreamer missing stops.

use crate::Disposition;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error("source {source_name:?}: cannot open {uri}: {reason}")]
    Open {
        source_name: String,
        uri: String,
        reason: String,
    },
    #[error("source {source_name:?} ({uri}): {message}{}", debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Stream {
        source_name: String,
        /// Credentials masked.
        uri: String,
        message: String,
        debug: Option<String>,
        live: bool,
    },
    #[error("source {source_name:?}: {uri} has no video stream (audio or other data only)")]
    NoVideo { source_name: String, uri: String },
    #[error("source {source_name:?}: cannot read frame: {reason}")]
    Frame { source_name: String, reason: String },
}

impl IngestError {
    pub fn disposition(&self) -> Disposition {
        match self {
            IngestError::Init(_) => Disposition::Stop,
            IngestError::Stream { live: true, .. } => Disposition::Retry,
            _ => Disposition::Skip,
        }
    }
}
