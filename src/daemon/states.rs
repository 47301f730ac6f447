//! Source states copied to SQLite for `cliptag status`, which asks from another process.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::status::{SourceStatus, StatusBoard};
use crate::store::{SourceStateRecord, StoreError, StoreWriter};

/// Copies source states to SQLite for `cliptag status`: a source whose state or reason
/// changed at once, every source (fresh counters) every [`STATE_REFRESH`]. Counters move
/// with every frame; writing them that often would only wear the SD card.
pub(super) struct StatePublisher {
    published: HashMap<String, (String, Option<String>)>,
    last_full: Option<Instant>,
}

pub(super) const STATE_REFRESH: Duration = Duration::from_secs(5);

impl StatePublisher {
    pub(super) fn new() -> StatePublisher {
        StatePublisher {
            published: HashMap::new(),
            last_full: None,
        }
    }

    /// `now`: unix seconds from the run's clock.
    pub(super) fn publish(
        &mut self,
        board: &StatusBoard,
        writer: &StoreWriter,
        now: f64,
        force: bool,
    ) {
        // A writer paused on a full disk could not store them; the states published
        // once it resumes carry the counters of the whole pause.
        if writer.paused().is_some() {
            return;
        }
        let full = force || self.last_full.is_none_or(|t| t.elapsed() >= STATE_REFRESH);
        if full {
            self.last_full = Some(Instant::now());
        }
        for s in board.snapshot() {
            let key = (s.state.label().to_string(), s.reason.clone());
            if !full && self.published.get(&s.name) == Some(&key) {
                continue;
            }
            self.published.insert(s.name.clone(), key);
            publish_state(&s, writer, now);
        }
    }
}

/// How long the daemon loop waits for the writer to confirm its commits: longer than a
/// batch takes to gather and commit, short enough to stay a loop that answers signals.
const CHECK_WAIT: Duration = Duration::from_millis(500);

/// Report write errors now rather than at exit, without waiting on a writer that is
/// paused or busy. An error comes back only when the writer cannot go on (its thread is
/// gone, the disk is unwritable); a rejected record is logged and skipped.
pub(super) fn check_writer(writer: &StoreWriter) -> Result<(), StoreError> {
    match writer.check(CHECK_WAIT) {
        Ok(_) => Ok(()),
        Err(e) if e.disposition() == crate::Disposition::Skip => {
            tracing::error!("a database write was rejected: {e}");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn publish_state(s: &SourceStatus, writer: &StoreWriter, now: f64) {
    let record = SourceStateRecord {
        name: s.name.clone(),
        uri: s.uri.clone(),
        state: s.state.label().to_string(),
        reason: s.reason.clone(),
        last_frame_time: s.last_frame_time,
        frames: s.frames,
        frames_dropped: s.frames_dropped,
        reconnects: s.reconnects,
        retries: s.retries,
        updated_at: now,
    };
    match writer.put_source_state(record) {
        Ok(true) => {}
        Ok(false) => {
            tracing::debug!(source = %s.name, "source state not queued: the writer is behind")
        }
        Err(e) => tracing::warn!(source = %s.name, "cannot record the source state: {e}"),
    }
}
