//! Progress as it happens: callbacks the run makes as sources start, windows are written
//! and sources end, so a terminal can draw bars without the library knowing about TTYs;
//! and, for the journal, one line per file every few seconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::report::SourceReport;
use crate::times::duration;

/// Progress callbacks, so the binary can draw a bar without the library knowing about TTYs.
pub trait Progress: Send + Sync {
    /// A source's first frame is out; `duration` (seconds) is known for files.
    fn source_started(&self, _name: &str, _duration: Option<f64>) {}
    /// A window was handed to inference; `end` is its end (a file's position, seconds).
    fn window_done(&self, _source: &str, _end: f64) {}
    fn source_finished(&self, _report: &SourceReport) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

/// Progress for the journal: every `interval`, one line per file still being read, with its
/// position, percentage and estimated time left; and one when it is done.
pub struct LogProgress {
    interval: Duration,
    files: Mutex<HashMap<String, FileProgress>>,
}

struct FileProgress {
    started: Instant,
    duration: f64,
    last_line: Instant,
}

impl LogProgress {
    pub fn new(interval: Duration) -> LogProgress {
        LogProgress {
            interval,
            files: Mutex::new(HashMap::new()),
        }
    }
}

impl Progress for LogProgress {
    fn source_started(&self, name: &str, duration: Option<f64>) {
        // Live sources have no end to count towards.
        if let (Some(d), Ok(mut files)) = (duration.filter(|d| *d > 0.0), self.files.lock()) {
            let now = Instant::now();
            files.insert(
                name.to_string(),
                FileProgress {
                    started: now,
                    duration: d,
                    last_line: now,
                },
            );
        }
    }

    fn window_done(&self, source: &str, end: f64) {
        let Ok(mut files) = self.files.lock() else {
            return;
        };
        let Some(f) = files.get_mut(source) else {
            return;
        };
        if f.last_line.elapsed() < self.interval {
            return;
        }
        f.last_line = Instant::now();
        let done = end.clamp(0.0, f.duration);
        let elapsed = f.started.elapsed().as_secs_f64();
        let left = if done > 0.0 {
            elapsed / done * (f.duration - done)
        } else {
            f64::NAN
        };
        tracing::info!(
            source,
            done_s = done.round(),
            of_s = f.duration.round(),
            percent = (100.0 * done / f.duration).round(),
            eta = %if left.is_finite() { duration(left) } else { "?".into() },
            "progress"
        );
    }

    fn source_finished(&self, report: &SourceReport) {
        if let Ok(mut files) = self.files.lock() {
            files.remove(&report.name);
        }
    }
}
