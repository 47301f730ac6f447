//! Source supervision: keep each source's pipeline running, and say how it is doing.
//!
//! Rules:
//! - The retry loop ([`SourceRunner::run`]) is separate from the work
//!   ([`SourceRunner::run_once`]): one attempt opens the pipeline and pulls frames until the
//!   stream ends, fails, or we are told to stop.
//! - Live sources (cameras, network streams) are never given up on: every failure, and every
//!   end of stream, backs off exponentially with jitter up to a cap, then reconnects. Files
//!   end when they end (or start over with `loop = true`); a broken file fails once.
//! - Live or not is known from the config or the scheme, except for HTTP, which serves
//!   recordings and cameras alike: there the stream decides at its first frame (a known
//!   end makes it a recording), once, logged; until then a failure is retried as for a
//!   camera. A recording is never read again from its start after a failure: that would
//!   tag its first windows twice.
//! - A window's fate is decided before any pixel of it is preprocessed, in this order: a
//!   window showing the scene of the source's last embedded window goes on as
//!   "unchanged" (no pixels; inference reuses that embedding); a paced source's window
//!   that finds the queue full is dropped and its frames counted, so a slow CLIP stage
//!   costs coverage, not memory nor preprocessing; only then are its keyframes turned
//!   into CLIP's input (`clip::window_pixels`).
//! - Time comes from a [`Clock`] so backoff and wall-clock stamps are testable without
//!   waiting; a window's wall time is stamped here, from that clock, when it is cut.
//! - State lives in a shared [`StatusBoard`]; the daemon copies it to SQLite and systemd.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};

use super::backoff::Backoff;
use super::opener::SourceOpener;
use super::progress::Progress;
use super::settings::DaemonConfig;
use super::status::{SourceState, StatusBoard};
use super::tagger::{WindowContent, WindowJob, WindowStamp};
use crate::clip::{window_pixels, PreprocessConfig};
use crate::clock::Clock;
use crate::ingest::{
    FileIdentity, FrameSource, IngestError, RecordedFrom, SourceConfig, SourceKind,
};
use crate::keyframes::{KeyframeConfig, LastScene, Window, Windower};

/// What a file's last window carries besides itself.
struct WindowEnd {
    /// What the file was, to mark it tagged once the window is written.
    file_done: Option<FileIdentity>,
    /// Told when inference has handed the window to the writer.
    handed_over: Option<crossbeam_channel::Sender<()>>,
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
    /// Live or finite: known before opening for most sources, decided by the stream at
    /// its first frame for HTTP (see [`SourceConfig::live_hint`]).
    pub live: Option<bool>,
}

/// Where a source's windows are placed in time, known from its first frame on.
#[derive(Debug, Clone, Copy)]
struct Placement {
    live: bool,
    /// A file's recording start and how it is known.
    recorded: Option<(f64, RecordedFrom)>,
    /// When this reading of the source began.
    started_at: f64,
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
    pub progress: Arc<dyn Progress>,
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
        let mut cursor = Cursor {
            live: self.source.live_hint(),
            ..Cursor::default()
        };
        let mut attempts = 0u64;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                self.set_state(SourceState::Stopped, None);
                return;
            }
            // Not known yet (an HTTP source that never played): treated as live, so a
            // server that is not up yet is retried rather than given up on.
            let live = cursor.live.unwrap_or(true);
            if attempts > 0 && live {
                self.board.update(&self.source.name, |s| s.retries += 1);
            }
            attempts += 1;
            self.set_state(SourceState::Connecting, None);
            cursor.delivered = false;
            let outcome = self.run_once(&mut cursor);
            let delivered = cursor.delivered;
            let live = cursor.live.unwrap_or(true);
            if delivered {
                backoff.reset();
            }
            let reason = match outcome {
                Attempt::Stopped => {
                    self.set_state(SourceState::Stopped, None);
                    return;
                }
                Attempt::Ended { .. } if self.source.looped && !live => {
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
                Attempt::Ended { .. } if !live => {
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
                Attempt::Failed(e) if !live => {
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
        // The opener reads the pipeline's drop policy from the source: what was decided,
        // else finite (back-pressure) until the stream says.
        let opened = SourceConfig {
            live: Some(cursor.live.unwrap_or(false)),
            ..self.source.clone()
        };
        let mut frames = match self.opener.open(&opened) {
            Ok(f) => f,
            Err(e) => return Attempt::Failed(e),
        };
        // A file's recording start, known once the first frame is out (the container's
        // tags come with it): the config's word, else the container's, else its mtime.
        let mut placement = Placement {
            live: cursor.live.unwrap_or(false),
            recorded: None,
            started_at: self.clock.now(),
        };
        let mut windower = Windower::new(self.window, self.keyframes.selector());
        // A new connection may show another scene, so it starts without a reference.
        let mut last_scene = LastScene::default();
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
                    if cursor.live.is_none() {
                        let live = frames.stream_is_live().unwrap_or(true);
                        tracing::info!(
                            source = %self.source.name,
                            live,
                            "{}",
                            if live {
                                "the stream has no known end: treated as a camera (set live = false for the source to say otherwise)"
                            } else {
                                "the stream has a known end: tagged once, as a recording (set live = true for the source to say otherwise)"
                            }
                        );
                        frames.set_live(live);
                        cursor.live = Some(live);
                        placement.live = live;
                    }
                    let base = *time_base.get_or_insert_with(|| {
                        if placement.live {
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
                        if !placement.live {
                            placement.recorded = self.recording_start(frames.as_ref());
                        }
                        // The pipeline has prerolled: a file's duration is known now.
                        self.progress
                            .source_started(&self.source.name, frames.duration());
                        if let Some(down_since) = cursor.down_since.take() {
                            self.board.update(&self.source.name, |s| s.reconnects += 1);
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
                        if !self.send(window, &placement, &mut last_scene) {
                            break Attempt::Stopped;
                        }
                    }
                }
                Ok(None) => {
                    // A recording's last window ends with it; a live source's keeps its
                    // length, so the next connection starts in a later window.
                    let end = if placement.live {
                        None
                    } else {
                        windower.stream_end(frames.duration().map(|d| d + time_base.unwrap_or(0.0)))
                    };
                    if let Some(window) = windower.finish(end) {
                        live_end = live_end.max(window.end);
                        // A file read to its end, once: its last window carries what the
                        // file was, so it can be marked tagged after that window is written.
                        let once = !placement.live && !self.source.looped;
                        let done = once
                            .then(|| FileIdentity::of(self.source.location.secret()))
                            .flatten();
                        let (told, handed_over) = crossbeam_channel::bounded(1);
                        let last = WindowEnd {
                            file_done: done,
                            handed_over: once.then_some(told),
                        };
                        if self.send_last(window, &placement, &mut last_scene, last) && once {
                            self.wait_until_handed_over(&handed_over);
                        }
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
        if placement.live {
            *loop_offset = live_end;
        } else {
            *loop_offset += frames.duration().unwrap_or(last_pts).max(last_pts);
            // Round up to a whole window so the next pass starts a fresh window.
            let w = self.window.as_secs_f64();
            *loop_offset = (*loop_offset / w).ceil() * w;
        }
        outcome
    }

    /// Decide a window's fate and hand it to inference (see the rules above). Paced sources
    /// drop it when the queue is full; files wait, checking for shutdown. Returns false when
    /// inference is gone.
    fn send(&self, window: Window, placement: &Placement, last_scene: &mut LastScene) -> bool {
        let last = WindowEnd {
            file_done: None,
            handed_over: None,
        };
        self.send_last(window, placement, last_scene, last)
    }

    /// [`Self::send`], for a window that may be a file's last.
    fn send_last(
        &self,
        window: Window,
        placement: &Placement,
        last_scene: &mut LastScene,
        last: WindowEnd,
    ) -> bool {
        let paced = self.source.paced(placement.live);
        let unchanged = last_scene.unchanged(&self.keyframes, &window.features);
        if paced && self.jobs.is_full() {
            self.window_dropped(&window);
            return true;
        }
        let content = if unchanged {
            WindowContent::Unchanged
        } else {
            WindowContent::Pixels(window_pixels(
                &window.keyframe_images(),
                self.keyframes.aggregate,
                &self.recipe,
            ))
        };
        let stamp = WindowStamp {
            source: &self.source.name,
            shown_uri: self.source.location.shown(),
            kind: SourceKind::of(placement.live),
            recorded_at: placement.recorded,
            processed_at: self.clock.now(),
            started_at: placement.started_at,
        };
        let job = WindowJob {
            file_done: last.file_done,
            handed_over: last.handed_over,
            ..WindowJob::new(&stamp, &window, content)
        };
        let end = window.end;
        let sent = if paced {
            match self.jobs.try_send(job) {
                Ok(()) => true,
                // Filled up while this window was being preprocessed: rare, and the same
                // outcome as finding it full.
                Err(TrySendError::Full(_)) => {
                    self.window_dropped(&window);
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        } else {
            let mut job = job;
            loop {
                match self.jobs.send_timeout(job, Duration::from_millis(200)) {
                    Ok(()) => break true,
                    Err(SendTimeoutError::Timeout(j)) => {
                        // Still alive, just waiting for inference.
                        self.board.update(&self.source.name, |_| {});
                        job = j;
                    }
                    Err(SendTimeoutError::Disconnected(_)) => return false,
                }
            }
        };
        if sent && !unchanged {
            last_scene.remember(window.features);
        }
        self.window_sent(end);
        true
    }

    /// Wait until inference has handed a file's last window to the writer, so the state
    /// "finished" (written after this) means every window is stored. Gives up on shutdown
    /// or when inference is gone.
    fn wait_until_handed_over(&self, handed_over: &crossbeam_channel::Receiver<()>) {
        while !self.stop.load(Ordering::SeqCst) {
            match handed_over.recv_timeout(Duration::from_millis(200)) {
                Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    // Still alive, waiting for inference.
                    self.board.update(&self.source.name, |_| {});
                }
            }
        }
    }

    /// When a file's recording started, best source first; logged once per file.
    fn recording_start(&self, frames: &dyn FrameSource) -> Option<(f64, RecordedFrom)> {
        // A recorder writes until the recording stops and closes the file then: its
        // modification time is the recording's end, so the start is one duration earlier.
        let from_file = || {
            std::fs::metadata(self.source.location.secret())
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| {
                    let end = d.as_secs_f64();
                    (end - frames.duration().unwrap_or(0.0), RecordedFrom::Mtime)
                })
        };
        let recorded = self
            .source
            .recorded_at
            .map(|t| (t, RecordedFrom::Config))
            .or_else(|| frames.recorded_at().map(|t| (t, RecordedFrom::Container)))
            .or_else(from_file)
            .or_else(|| {
                // A recording on a web server: its Last-Modified is its mtime.
                let end = frames.modified_at()?;
                Some((end - frames.duration().unwrap_or(0.0), RecordedFrom::Mtime))
            });
        match recorded {
            Some((t, from)) => {
                tracing::info!(source = %self.source.name, recorded_at = %crate::times::Zone::local().rfc3339(t), from = from.as_str(), "recording start")
            }
            None => {
                tracing::warn!(source = %self.source.name, "the recording's start is unknown (no date in the file, no modification time, no Last-Modified): its windows are placed at the time they are tagged; set recorded_at for the source")
            }
        }
        recorded
    }

    fn window_dropped(&self, window: &Window) {
        let sampled = window.sampled as u64;
        self.board.update(&self.source.name, |s| {
            s.windows_dropped += 1;
            s.frames_dropped += sampled;
        });
        tracing::debug!(source = %self.source.name, "inference is behind: window dropped");
    }

    fn window_sent(&self, end: f64) {
        self.board.update(&self.source.name, |s| s.windows += 1);
        self.progress.window_done(&self.source.name, end);
    }
}
