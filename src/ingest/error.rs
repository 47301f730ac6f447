//! Ingest errors, and what the caller should do about each: a live source's stream error is
//! worth a retry, a broken file is skipped, GStreamer missing stops.

use crate::Disposition;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error("{}cannot open {uri}: {reason}", named(source_name, uri))]
    Open {
        source_name: String,
        uri: String,
        reason: String,
    },
    #[error("{}{uri}: {message}{}", named(source_name, uri), debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Stream {
        source_name: String,
        /// Credentials masked.
        uri: String,
        message: String,
        debug: Option<String>,
        live: bool,
    },
    #[error(
        "{}{uri} has no video stream (audio or other data only)",
        named(source_name, uri)
    )]
    NoVideo { source_name: String, uri: String },
    #[error("source {source_name:?}: cannot read frame: {reason}")]
    Frame { source_name: String, reason: String },
}

/// `source "cam": ` before a message about `uri`, unless the source is named by its location
/// (a file given on the command line), which the message names anyway.
fn named(source_name: &str, uri: &str) -> String {
    if source_name.is_empty() || source_name == uri {
        String::new()
    } else {
        format!("source {source_name:?}: ")
    }
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
