//! cliptag: watch video, write down what CLIP sees, query it later.
//!
//! ```text
//!  ingest ──► keyframes ──► clip ──► classify ──► store ──► query
//!  (GStreamer   (windows,     (tract     (mean/cosine/  (SQLite, one
//!   RGB frames)  selection)    encoders)  softmax)       writer thread)
//!        ▲                                                 │
//!        └──────────────── daemon (supervision, signals) ──┘
//! ```
//!
//! One module per stage, declared in flow order; each stage owns its output type.

pub mod classify;
pub mod clip;
pub mod config;
pub mod daemon;
pub mod ingest;
pub mod keyframes;
pub mod query;
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

/// Milliseconds since the first call in this process: a monotonic stamp that threads can
/// share through an atomic (heartbeats, stall detection).
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}
