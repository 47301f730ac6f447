//! Source supervision: keep each source's pipeline running, and say how it is doing.
//!
//! Rules:
//! - The retry loop ([`SourceRunner::run`]) is separate from the work
//!   ([`SourceRunner::run_once`]): one attempt opens the pipeline and pulls frames until the
//!   stream ends, fails, or we are told to stop.
//! - Live sources (cameras, network streams) are never given up on: every failure, and every
//!   end of stream, backs off exponentially with jitter up to a cap, then reconnects. Files
//!   end when they end (or start over with `loop = true`); a broken file fails once.
//! - Paced sources never wait for inference: a window that finds the queue full is dropped
//!   and its frames counted, so a slow CLIP stage costs coverage, not memory.
//! - Time comes from a [`Clock`] so backoff and wall-clock stamps are testable without waiting.
//! - State lives in a shared [`StatusBoard`]; the daemon copies it to SQLite and systemd.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender};

use crate::clip::PreprocessConfig;
use crate::config::{mask_uri, DaemonConfig, KeyframeConfig, RtspTransport, SourceConfig};
use crate::ingest::{FrameSource, GstSource, IngestError, OpenOptions, Sampling};
use crate::keyframes::{Window, Windower};

use super::tagger::{job_from_window, selector_for, WindowJob};

/// Wall-clock time and sleeping, behind a trait so tests need no waiting.
pub trait Clock: Send + Sync {
    /// Unix seconds.
    fn now(&self) -> f64;
    /// Sleep up to `duration`, returning early (false) once `stop` is set.
    fn sleep(&self, duration: Duration, stop: &AtomicBool) -> bool;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        super::now_unix()
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

/// Exponential backoff with "equal jitter": half the delay is fixed, half random, so many
/// cameras that dropped together (a switch reboot) do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
            rng: seed,
        }
    }

    /// The delay before the next attempt; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let exponent = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let base = self
            .initial
            .saturating_mul(1u32 << exponent.min(31))
            .min(self.max);
        let half = base / 2;
        half + half.mul_f64(self.random_unit())
    }

    /// A source that delivered frames again starts over from the initial delay.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    fn random_unit(&mut self) -> f64 {
        // SplitMix64: tiny, and good enough to spread reconnects.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

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
    pub reconnects: u64,
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
        self.update_or_insert(&source.name, &source.uri, |_| {});
    }

    fn update_or_insert(&self, name: &str, uri: &str, f: impl FnOnce(&mut SourceStatus)) {
        if let Ok(mut map) = self.inner.lock() {
            let status = map.entry(name.to_string()).or_insert_with(|| SourceStatus {
                name: name.to_string(),
                uri: mask_uri(uri),
                state: SourceState::Connecting,
                reason: None,
                last_frame_time: None,
                frames: 0,
                frames_dropped: 0,
                windows: 0,
                windows_dropped: 0,
                reconnects: 0,
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

pub use crate::monotonic_ms;

/// Opens a source's pipeline; the real one is GStreamer, tests may script failures.
pub trait SourceOpener: Send + Sync {
    fn open(&self, source: &SourceConfig) -> Result<Box<dyn FrameSource>, IngestError>;
}

/// The GStreamer pipeline for a configured source.
pub struct GstOpener {
    pub sampling: Sampling,
    pub stall_timeout: Duration,
}

impl SourceOpener for GstOpener {
    fn open(&self, source: &SourceConfig) -> Result<Box<dyn FrameSource>, IngestError> {
        let options = OpenOptions {
            sampling: self.sampling,
            live: source.paced(),
            realtime: source.realtime,
            rtsp_tcp: source.transport == RtspTransport::Tcp,
            stall_timeout: self.stall_timeout,
            buffer_frames: 4,
        };
        Ok(Box::new(GstSource::open_with(
            &source.name,
            &source.uri,
            options,
        )?))
    }
}

/// What one attempt hands to the next.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    /// Windows of the next attempt start at or after this time: the media time covered by
    /// earlier passes of a looped file, or the end of a live source's last window.
    pub floor: f64,
    /// The attempt delivered at least one frame.
    pub delivered: bool,
    /// When a live source last stopped delivering, to log how long it was down.
    pub down_since: Option<f64>,
}

/// How one attempt ended.
#[derive(Debug)]
pub enum Attempt {
    /// The stream ended; `note` is GStreamer's last warning, which for a camera is often
    /// why (rtspsrc reports a server that went away as a warning, then ends the stream).
    Ended {
        note: Option<String>,
    },
    /// We were told to stop.
    Stopped,
    Failed(IngestError),
}

/// Everything one source thread needs.
pub struct SourceRunner {
    pub source: SourceConfig,
    pub window: Duration,
    pub keyframes: KeyframeConfig,
    pub recipe: PreprocessConfig,
    pub daemon: DaemonConfig,
    pub opener: Arc<dyn SourceOpener>,
    pub clock: Arc<dyn Clock>,
    pub board: StatusBoard,
    pub jobs: Sender<WindowJob>,
    /// Set on shutdown: stop taking frames.
    pub stop: Arc<AtomicBool>,
    pub progress: Arc<dyn super::Progress>,
}

impl SourceRunner {
    /// Retry `run_once` until the source is done, has failed for good, or we stop.
    pub fn run(&self) {
        let seed = self
            .source
            .name
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
        let mut backoff = Backoff::new(self.daemon.backoff_initial, self.daemon.backoff_max, seed);
        // Media time already covered by earlier passes of a looped file (or, for a live
        // source, the end of the last window written), so windows keep moving forward
        // instead of overwriting earlier ones.
        let mut cursor = Cursor::default();
        let mut attempts = 0u64;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                self.set_state(SourceState::Stopped, None);
                return;
            }
            if attempts > 0 && self.source.is_live() {
                self.board.update(&self.source.name, |s| s.reconnects += 1);
            }
            attempts += 1;
            self.set_state(SourceState::Connecting, None);
            cursor.delivered = false;
            let outcome = self.run_once(&mut cursor);
            let delivered = cursor.delivered;
            if delivered {
                backoff.reset();
            }
            let reason = match outcome {
                Attempt::Stopped => {
                    self.set_state(SourceState::Stopped, None);
                    return;
                }
                Attempt::Ended { .. } if self.source.looped && !self.source.is_live() => {
                    if !delivered {
                        // A file that yields nothing would otherwise spin.
                        self.set_state(
                            SourceState::Failed,
                            Some("the stream ended without a single video frame".into()),
                        );
                        return;
                    }
                    continue;
                }
                Attempt::Ended { .. } if !self.source.is_live() => {
                    if delivered {
                        self.set_state(SourceState::Finished, None);
                    } else {
                        self.set_state(
                            SourceState::Failed,
                            Some("the stream ended without a single video frame".into()),
                        );
                    }
                    return;
                }
                Attempt::Ended { note: None } => "the stream ended".to_string(),
                Attempt::Ended { note: Some(note) } => format!("the stream ended: {note}"),
                Attempt::Failed(e) if !self.source.is_live() => {
                    tracing::error!(source = %self.source.name, "{e}");
                    self.set_state(SourceState::Failed, Some(e.to_string()));
                    return;
                }
                Attempt::Failed(e) => e.to_string(),
            };
            cursor.down_since.get_or_insert(self.clock.now());
            let delay = backoff.next_delay();
            tracing::warn!(source = %self.source.name, retry_in_ms = delay.as_millis() as u64, "{reason}");
            let until = self.clock.now() + delay.as_secs_f64();
            self.set_state(SourceState::BackingOff { until }, Some(reason));
            if !self.clock.sleep(delay, &self.stop) {
                self.set_state(SourceState::Stopped, None);
                return;
            }
        }
    }

    fn set_state(&self, state: SourceState, reason: Option<String>) {
        self.board.update(&self.source.name, |s| {
            s.state = state;
            if reason.is_some() {
                s.reason = reason;
            }
        });
    }

    /// One attempt: open, pull frames into windows, hand windows to inference.
    pub fn run_once(&self, cursor: &mut Cursor) -> Attempt {
        let loop_offset = &mut cursor.floor;
        let delivered = &mut cursor.delivered;
        let mut frames = match self.opener.open(&self.source) {
            Ok(f) => f,
            Err(e) => return Attempt::Failed(e),
        };
        self.progress
            .source_started(&self.source.name, frames.duration());
        let mut windower = Windower::new(self.window, selector_for(&self.keyframes));
        // Live streams restart their timestamps at every connection; stamping their
        // windows with wall-clock time keeps segments of different connections apart and
        // aligns windows to the clock.
        let mut time_base: Option<f64> = None;
        let mut reported_drops = 0u64;
        let mut last_pts = 0.0f64;
        let mut live_end = *loop_offset;
        let outcome = loop {
            if self.stop.load(Ordering::SeqCst) {
                break Attempt::Stopped;
            }
            match frames.next_frame() {
                Ok(Some(mut frame)) => {
                    let base = *time_base.get_or_insert_with(|| {
                        if self.source.is_live() {
                            // Never before the end of what an earlier connection wrote,
                            // even if a stream delivers faster than real time.
                            self.clock.now().max(*loop_offset) - frame.pts
                        } else {
                            *loop_offset
                        }
                    });
                    last_pts = last_pts.max(frame.pts);
                    frame.pts += base;
                    if !*delivered {
                        *delivered = true;
                        if let Some(down_since) = cursor.down_since.take() {
                            tracing::info!(
                                source = %self.source.name,
                                down_s = ((self.clock.now() - down_since) * 100.0).round() / 100.0,
                                "streaming again"
                            );
                        }
                        self.set_state(SourceState::Streaming, None);
                        self.board.update(&self.source.name, |s| s.reason = None);
                    }
                    let now = self.clock.now();
                    let dropped_now = frames.dropped();
                    self.board.update(&self.source.name, |s| {
                        s.frames += 1;
                        s.last_frame_time = Some(now);
                        s.frames_dropped += dropped_now - reported_drops;
                    });
                    reported_drops = dropped_now;
                    if let Some(window) = windower.push(frame) {
                        live_end = live_end.max(window.end);
                        if !self.send(window) {
                            break Attempt::Stopped;
                        }
                    }
                }
                Ok(None) => {
                    let end = frames.duration().map(|d| d + time_base.unwrap_or(0.0));
                    if let Some(window) = windower.finish(end) {
                        live_end = live_end.max(window.end);
                        self.send(window);
                    }
                    break Attempt::Ended {
                        note: frames.warnings().last().cloned(),
                    };
                }
                Err(e) => {
                    // Completed windows are already on their way; the partial one is dropped.
                    break Attempt::Failed(e);
                }
            }
        };
        for warning in frames.warnings() {
            tracing::warn!(source = %self.source.name, "{warning}");
        }
        self.board.update(&self.source.name, |s| s.activity = None);
        if self.source.is_live() {
            *loop_offset = live_end;
        } else {
            *loop_offset += frames.duration().unwrap_or(last_pts).max(last_pts);
            // Round up to a whole window so the next pass starts a fresh window.
            let w = self.window.as_secs_f64();
            *loop_offset = (*loop_offset / w).ceil() * w;
        }
        outcome
    }

    /// Hand a window to inference. Paced sources drop it when the queue is full; files
    /// wait, checking for shutdown. Returns false when inference is gone.
    fn send(&self, window: Window) -> bool {
        let sampled = window.sampled as u64;
        let end = window.end;
        let job = job_from_window(
            &self.source.name,
            &self.source.uri,
            window,
            &self.recipe,
            self.keyframes.aggregate,
        );
        if self.source.paced() {
            return match self.jobs.try_send(job) {
                Ok(()) => {
                    self.window_sent(end);
                    true
                }
                Err(crossbeam_channel::TrySendError::Full(_)) => {
                    self.board.update(&self.source.name, |s| {
                        s.windows_dropped += 1;
                        s.frames_dropped += sampled;
                    });
                    tracing::debug!(source = %self.source.name, "inference is behind: window dropped");
                    true
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
            };
        }
        let mut job = job;
        loop {
            match self.jobs.send_timeout(job, Duration::from_millis(200)) {
                Ok(()) => {
                    self.window_sent(end);
                    return true;
                }
                Err(SendTimeoutError::Timeout(j)) => {
                    // Still alive, just waiting for inference.
                    self.board.update(&self.source.name, |_| {});
                    job = j;
                }
                Err(SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }

    fn window_sent(&self, end: f64) {
        self.board.update(&self.source.name, |s| s.windows += 1);
        self.progress.window_done(&self.source.name, end);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 7);
        let delays: Vec<f64> = (0..8).map(|_| b.next_delay().as_secs_f64()).collect();
        let bases = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0];
        for (d, base) in delays.iter().zip(bases) {
            assert!(*d >= base / 2.0 && *d <= base, "{delays:?}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn backoff_jitter_differs_between_sources() {
        let mut a = Backoff::new(Duration::from_secs(10), Duration::from_secs(60), 1);
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(60), 2);
        assert_ne!(a.next_delay(), b.next_delay());
    }
}
