//! The outside world a run talks to, so tests can substitute their own pieces.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::notify::Notifier;
use super::opener::SourceOpener;
use super::progress::Progress;
use super::signals::{listen_for_signals, ControlEvent};
use crate::clock::{Clock, SystemClock};

/// The outside world the daemon talks to; tests substitute their own pieces.
pub struct Environment {
    pub progress: Arc<dyn Progress>,
    pub events: Receiver<ControlEvent>,
    pub notifier: Notifier,
    pub clock: Arc<dyn Clock>,
    pub opener: Option<Arc<dyn SourceOpener>>,
}

impl Environment {
    /// Real signals, systemd from the environment, the system clock, GStreamer sources.
    pub fn system(progress: Arc<dyn Progress>) -> std::io::Result<Environment> {
        Ok(Environment {
            progress,
            events: listen_for_signals()?,
            notifier: Notifier::from_env(),
            clock: Arc::new(SystemClock),
            opener: None,
        })
    }
}
