//! cliptag: watch video, write down what CLIP sees, query it later.
//!
//! ```text
//!  ingest ──► keyframes ──► clip ──► classify ──► store ──► query
//!  (GStreamer   (windows,     (tract     (mean/cosine/  (SQLite, one
//!   RGB frames)  keyframes,    encoders)  softmax)       writer thread)
//!               aggregation)
//!        ▲                                                 │
//!        └──────────────── daemon (supervision, signals) ──┘
//! ```
//!
//! One module per stage; each owns its output type, its errors and its table of the config
//! (`settings` is the vocabulary they validate with; `daemon::config` only composes the
//! tables of the daemon's config file).
//! Data runs one way: a stage imports the stages upstream of it, never the reverse. `clock`
//! is the one source of wall time, `memory` the allocator's policy, `embed` the `cliptag
//! embed` pipeline (ingest → clip, no windows). The graph passes and kernels the clip stage
//! runs with are the `cliptag_tract` crate; the workstation tuner is `cliptag_tune`, which
//! reuses these stages so what it trains matches what the daemon computes.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod classify;
pub mod clip;
pub mod clock;
pub mod daemon;
pub mod embed;
pub mod ingest;
pub mod keyframes;
pub mod logging;
pub mod memory;
pub mod query;
pub mod settings;
pub mod store;
pub mod times;

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
