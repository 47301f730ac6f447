//! What a run tells its caller: per-source outcomes, and progress as it happens.

use super::status::{SourceState, SourceStatus};

/// Options of a run that are not part of the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Accept a database holding segments of another model.
    pub new_model_generation: bool,
    /// Leave out file sources already tagged to their end, unchanged, by this model and
    /// label set (a run over a pile of recordings picks up where it stopped).
    pub skip_tagged_files: bool,
}

/// What happened to one source.
#[derive(Debug, Clone, Default)]
pub struct SourceReport {
    pub name: String,
    /// Windows written to the database.
    pub windows: u64,
    pub frames: u64,
    pub frames_dropped: u64,
    /// Outages recovered from, and connection attempts after failures.
    pub reconnects: u64,
    pub retries: u64,
    /// The source's last state ("finished", "failed", "stopped", ...).
    pub state: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub model_id: String,
    pub labels: usize,
    pub prompts_encoded: usize,
    pub sources: Vec<SourceReport>,
    /// Ended by SIGTERM/SIGINT rather than by every source ending.
    pub stopped_by_signal: bool,
    /// Windows still queued when the shutdown deadline passed.
    pub abandoned_windows: u64,
    /// Windows CLIP failed on (logged; the source carried on).
    pub failed_windows: u64,
    /// Files left out: already tagged to their end, unchanged, with this model and labels.
    pub skipped: Vec<String>,
}

impl RunReport {
    pub fn anything_processed(&self) -> bool {
        self.sources.iter().any(|s| s.windows > 0)
    }

    /// Sources that had windows written.
    pub fn sources_with_windows(&self) -> usize {
        self.sources.iter().filter(|s| s.windows > 0).count()
    }
}

/// A source's status as its report line.
pub(super) fn report_of(status: &SourceStatus) -> SourceReport {
    SourceReport {
        name: status.name.clone(),
        windows: status.windows,
        frames: status.frames,
        frames_dropped: status.frames_dropped,
        reconnects: status.reconnects,
        retries: status.retries,
        state: status.state.label().to_string(),
        error: match status.state {
            SourceState::Failed => status.reason.clone(),
            _ => None,
        },
    }
}
