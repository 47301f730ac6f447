//! How each source and the inference stage are doing: shared by the source threads, the
//! daemon loop (systemd status and watchdog, `cliptag status`) and tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::monotonic_ms;
use crate::ingest::SourceConfig;

/// What a source is doing now.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceState {
    Connecting,
    Streaming,
    BackingOff {
        until: f64,
    },
    /// Given up (a broken file, an unknown URI scheme); the reason says why.
    Failed,
    /// A file that reached its end.
    Finished,
    Stopped,
}

impl SourceState {
    pub fn label(&self) -> &'static str {
        match self {
            SourceState::Connecting => "connecting",
            SourceState::Streaming => "streaming",
            SourceState::BackingOff { .. } => "backing off",
            SourceState::Failed => "failed",
            SourceState::Finished => "finished",
            SourceState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SourceStatus {
    pub name: String,
    /// Credentials masked.
    pub uri: String,
    pub state: SourceState,
    /// The last error, kept while backing off and after failing.
    pub reason: Option<String>,
    pub last_frame_time: Option<f64>,
    pub frames: u64,
    /// Frames GStreamer delivered that we had no room for, plus frames of windows dropped
    /// because inference was behind.
    pub frames_dropped: u64,
    pub windows: u64,
    pub windows_dropped: u64,
    /// Outages the source came back from (streaming again after being down).
    pub reconnects: u64,
    /// Connection attempts after a failure or an end.
    pub retries: u64,
    /// Monotonic milliseconds of the source thread's last sign of life.
    pub heartbeat_ms: u64,
    /// The open pipeline's own sign of life: its reader loop stamps it while waiting for a
    /// frame, so a camera sampled once a minute is not mistaken for a stuck thread.
    pub activity: Option<Arc<AtomicU64>>,
}

impl SourceStatus {
    /// How long since the source thread last showed it is not stuck.
    pub fn silent_for(&self) -> Duration {
        let last = self
            .activity
            .as_ref()
            .map(|a| a.load(Ordering::Relaxed))
            .unwrap_or(0)
            .max(self.heartbeat_ms);
        Duration::from_millis(monotonic_ms().saturating_sub(last))
    }
}

/// Every source's status, shared by the source threads, the daemon loop and tests.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard {
    inner: Arc<Mutex<BTreeMap<String, SourceStatus>>>,
}

impl StatusBoard {
    pub fn register(&self, source: &SourceConfig) {
        self.update_or_insert(&source.name, source.location.shown(), |_| {});
    }

    fn update_or_insert(&self, name: &str, shown_uri: &str, f: impl FnOnce(&mut SourceStatus)) {
        if let Ok(mut map) = self.inner.lock() {
            let status = map.entry(name.to_string()).or_insert_with(|| SourceStatus {
                name: name.to_string(),
                uri: shown_uri.to_string(),
                state: SourceState::Connecting,
                reason: None,
                last_frame_time: None,
                frames: 0,
                frames_dropped: 0,
                windows: 0,
                windows_dropped: 0,
                reconnects: 0,
                retries: 0,
                heartbeat_ms: monotonic_ms(),
                activity: None,
            });
            status.heartbeat_ms = monotonic_ms();
            f(status);
        }
    }

    pub fn update(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        if let Ok(mut map) = self.inner.lock() {
            if let Some(status) = map.get_mut(name) {
                status.heartbeat_ms = monotonic_ms();
                f(status);
            }
        }
    }

    pub fn snapshot(&self) -> Vec<SourceStatus> {
        self.inner
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, name: &str) -> Option<SourceStatus> {
        self.inner.lock().ok().and_then(|m| m.get(name).cloned())
    }

    /// One line for systemd's STATUS=: each source's state, and why when it is unhappy.
    pub fn summary(&self) -> String {
        self.snapshot()
            .iter()
            .map(|s| match (&s.state, &s.reason) {
                (SourceState::Streaming, _) => {
                    format!("{}: streaming ({} frames)", s.name, s.frames)
                }
                (state, Some(reason)) => format!("{}: {} ({})", s.name, state.label(), reason),
                (state, None) => format!("{}: {}", s.name, state.label()),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Counter of windows the inference stage finished, shared with the daemon loop.
#[derive(Debug, Default)]
pub struct StageBeat {
    last_ms: AtomicU64,
}

impl StageBeat {
    pub fn beat(&self) {
        self.last_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    pub fn age(&self) -> Duration {
        Duration::from_millis(monotonic_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}
