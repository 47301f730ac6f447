//! cliptag: watch video, write down what CLIP sees, query it later.
#![deny(clippy::undocumented_unsafe_blocks)]
//!
//! ```text
//!  ingest ──► keyframes ──► clip ──► classify ──► store ──► query
//!  (GStreamer   (windows,     (tract     (mean/cosine/  (SQLite, one
//!   RGB frames)  selection)    encoders)  softmax)       writer thread)
//!        ▲                                                 │
//!        └──────────────── daemon (supervision, signals) ──┘
//! ```
//!
//! One module per stage, declared in flow order; each stage owns its output type. `tune`
//! (feature `tune`, the workstation tuner) runs the same ingest → keyframes → clip stages
//! over labelled videos and writes a probe head that `classify` loads.

pub mod classify;
pub mod clip;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod embed;
pub mod ingest;
pub mod keyframes;
pub mod memory;
pub mod query;
pub mod settings;
pub mod store;

/// What the caller should do about an error. Every module-boundary error type
/// says which of these applies, so loops can decide without string matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: try the same thing again later (camera dropped, database busy).
    Retry,
    /// This input is unusable; carry on with the others (corrupt file, bad label line).
    Skip,
    /// Nothing sensible can continue (model missing, database unwritable).
    Stop,
}
