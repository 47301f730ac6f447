//! systemd notifications: READY, STATUS, WATCHDOG and STOPPING over `$NOTIFY_SOCKET`.
//!
//! Rules:
//! - Without `NOTIFY_SOCKET` (run by hand, in a container) every call is a no-op.
//! - WATCHDOG=1 is sent only by the daemon loop after it checked that every stage made
//!   progress recently, so systemd restarts a daemon that is alive but stuck.
//! - A failed send is logged once, never fatal: the daemon's work matters more.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    warned: AtomicBool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (honouring `WATCHDOG_PID`).
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        Notifier {
            enabled,
            watchdog: if enabled {
                sd_notify::watchdog_enabled()
            } else {
                None
            },
            warned: AtomicBool::new(false),
        }
    }

    pub fn disabled() -> Notifier {
        Notifier {
            enabled: false,
            watchdog: None,
            warned: AtomicBool::new(false),
        }
    }

    /// The watchdog period systemd expects pings within, if it set one.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn watchdog_ping(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!("cannot notify systemd through NOTIFY_SOCKET: {e}");
            }
        }
    }
}
