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
pub mod query;
pub mod settings;
pub mod store;
#[cfg(feature = "tune")]
pub mod tune;

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

/// Sets glibc's allocator up for a long-running process with many threads; call it first
/// thing in `main`, before any thread starts. `MALLOC_ARENA_MAX` in the environment wins.
///
/// Two arenas: glibc would give each of GStreamer's streaming threads its own (up to 8 per
/// core), each keeping what it freed. Over 30 minutes with 5 sources RSS crept from 270 to
/// 360 MB; with two arenas it stayed at 260–285 MB (scripts/bench-daemon.sh).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Hands memory the allocator holds free back to the system. Loading a model and typing a
/// graph free hundreds of megabytes in blocks of a few megabytes, which glibc keeps in its
/// heap (its threshold for mapping blocks separately climbs to 32 MiB after the first large
/// free); without this a daemon with ViT-B/32 int8 loaded holds ~350 MB instead of ~200 MB.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
