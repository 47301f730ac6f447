//! Why a model could not be loaded or run; all but an untokenizable text stop a run, since
//! a broken model directory does not mend itself.

use std::path::PathBuf;

use tract_onnx::prelude::TractError;

use crate::Disposition;

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("model directory {dir}: missing {what} (expected {path})")]
    MissingFile {
        dir: PathBuf,
        what: String,
        path: PathBuf,
    },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("model {path}: tract cannot use this ONNX graph: {reason}")]
    Onnx { path: PathBuf, reason: String },
    #[error("model directory {dir}: {reason}")]
    Mismatch { dir: PathBuf, reason: String },
    #[error("inference failed in {path}: {reason}")]
    Inference { path: PathBuf, reason: String },
    #[error("cannot tokenize {text:?}: {reason}")]
    Tokenize { text: String, reason: String },
    #[error("device \"{device}\" is not usable here: {reason} (device = \"auto\" or \"cpu\" runs on the CPU)")]
    DeviceUnavailable { device: String, reason: String },
}

impl ClipError {
    pub fn disposition(&self) -> Disposition {
        match self {
            ClipError::Tokenize { .. } => Disposition::Skip,
            _ => Disposition::Stop,
        }
    }
}

/// tract chains contexts; the whole chain says which node and why.
pub(super) fn format_err(e: &TractError) -> String {
    format!("{e:#}").replace('\n', "; ")
}
