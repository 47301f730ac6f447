//! The `[daemon]` table: how the long-running service treats its sources and its queue.

use std::time::Duration;

use serde::Deserialize;

use crate::ingest::DEFAULT_STALL_TIMEOUT;
use crate::settings::{duration, Invalid, Setting};

/// How the long-running service behaves around its sources.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// After SIGTERM: how long windows in flight may take to reach the database.
    pub shutdown_timeout: Duration,
    /// First reconnect delay of a failed live source; doubled per failure up to the cap.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A pipeline that yields no frame, error or end of stream for this long is restarted.
    pub stall_timeout: Duration,
    /// Windows waiting for inference across all sources; live sources drop when it is full.
    pub queue: usize,
    /// Without a terminal: how often a file being tagged says how far it is.
    pub progress_interval: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            shutdown_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            queue: 8,
            progress_interval: Duration::from_secs(30),
        }
    }
}

/// The `[daemon]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSection {
    shutdown_timeout: Option<Setting<String>>,
    backoff_initial: Option<Setting<String>>,
    backoff_max: Option<Setting<String>>,
    stall_timeout: Option<Setting<String>>,
    queue: Option<Setting<usize>>,
    progress_interval: Option<Setting<String>>,
}

impl DaemonSection {
    pub fn validate(&self) -> Result<DaemonConfig, Invalid> {
        let mut daemon = DaemonConfig::default();
        if let Some(v) = &self.shutdown_timeout {
            daemon.shutdown_timeout = duration("daemon.shutdown_timeout", v)?;
        }
        if let Some(v) = &self.backoff_initial {
            daemon.backoff_initial = duration("daemon.backoff_initial", v)?;
        }
        if let Some(v) = &self.backoff_max {
            daemon.backoff_max = duration("daemon.backoff_max", v)?;
            if daemon.backoff_max < daemon.backoff_initial {
                return Err(Invalid::at(
                    "daemon.backoff_max",
                    v,
                    "must not be shorter than daemon.backoff_initial",
                ));
            }
        }
        if let Some(v) = &self.stall_timeout {
            daemon.stall_timeout = duration("daemon.stall_timeout", v)?;
        }
        if let Some(q) = &self.queue {
            if !(1..=1024).contains(q.get()) {
                return Err(Invalid::at(
                    "daemon.queue",
                    q,
                    format!("expected 1 to 1024 windows, got {}", q.get()),
                ));
            }
            daemon.queue = *q.get();
        }
        if let Some(v) = &self.progress_interval {
            daemon.progress_interval = duration("daemon.progress_interval", v)?;
        }
        Ok(daemon)
    }
}
