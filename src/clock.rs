//! Wall-clock time and sleeping, behind a trait so that every wall time cliptag records is
//! made from one injected clock, and tests can drive time without waiting.
//!
//! Rules, and why:
//! - Code that stamps a wall time (a window's capture time, a source state, retention's
//!   "now") takes a [`Clock`]; nothing below the daemon calls `SystemTime::now` itself, so a
//!   test's clock governs every time a run writes.
//! - [`monotonic_ms`] is for durations and liveness only (heartbeats, stall detection): it
//!   never goes back when the wall clock is stepped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock time and sleeping.
pub trait Clock: Send + Sync {
    /// Unix seconds.
    fn now(&self) -> f64;
    /// Sleep up to `duration`, returning early (false) once `stop` is set.
    fn sleep(&self, duration: Duration, stop: &AtomicBool) -> bool;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }

    fn sleep(&self, duration: Duration, stop: &AtomicBool) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// Milliseconds since the first call in this process: a monotonic stamp that threads can
/// share through an atomic (heartbeats, stall detection).
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
