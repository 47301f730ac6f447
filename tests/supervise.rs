//! Source supervision without a camera or waiting: scripted frame sources and a manual
//! clock drive the real retry loop, windowing and drop accounting.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cliptag::clip::PreprocessConfig;
use cliptag::clock::Clock;
use cliptag::daemon::{
    DaemonConfig, NoProgress, SourceOpener, SourceRunner, SourceState, StatusBoard, WindowJob,
};
use cliptag::ingest::{Frame, FrameSource, IngestError, RgbImage, SourceConfig};
use cliptag::keyframes::{KeyframeConfig, Selection};

/// Time stands still except when the runner sleeps; sleeps are recorded, and the runner is
/// told to stop after `stop_after` of them.
struct ManualClock {
    now: Mutex<f64>,
    sleeps: Mutex<Vec<Duration>>,
    stop_after: usize,
}

impl ManualClock {
    fn new(stop_after: usize) -> ManualClock {
        ManualClock {
            now: Mutex::new(1_800_000_000.0),
            sleeps: Mutex::new(Vec::new()),
            stop_after,
        }
    }

    fn sleeps(&self) -> Vec<f64> {
        self.sleeps
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_secs_f64())
            .collect()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        *self.now.lock().unwrap()
    }

    fn sleep(&self, duration: Duration, stop: &AtomicBool) -> bool {
        let mut sleeps = self.sleeps.lock().unwrap();
        sleeps.push(duration);
        *self.now.lock().unwrap() += duration.as_secs_f64();
        if sleeps.len() >= self.stop_after {
            stop.store(true, Ordering::SeqCst);
        }
        !stop.load(Ordering::SeqCst)
    }
}

/// Frames at `fps` for `seconds`, then the end of the stream.
struct Frames(VecDeque<Frame>);

impl Frames {
    fn new(fps: f64, seconds: f64) -> Frames {
        let n = (fps * seconds).round() as usize;
        Frames(
            (0..n)
                .map(|i| Frame {
                    pts: i as f64 / fps,
                    image: RgbImage::new(8, 8, vec![(i * 7 % 256) as u8; 8 * 8 * 3]).unwrap(),
                })
                .collect(),
        )
    }
}

impl FrameSource for Frames {
    fn name(&self) -> &str {
        "scripted"
    }
    fn next_frame(&mut self) -> Result<Option<Frame>, IngestError> {
        Ok(self.0.pop_front())
    }
}

/// Fails the first `failures` opens, then streams `seconds` of frames per open; sets the
/// stop flag on open number `stop_on` (1-based) if given.
struct Scripted {
    opens: AtomicUsize,
    failures: usize,
    seconds: f64,
    stop_on: Option<(usize, Arc<AtomicBool>)>,
}

impl SourceOpener for Scripted {
    fn open(&self, source: &SourceConfig) -> Result<Box<dyn FrameSource>, IngestError> {
        let n = self.opens.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((on, stop)) = &self.stop_on {
            if n >= *on {
                stop.store(true, Ordering::SeqCst);
            }
        }
        if n <= self.failures {
            return Err(IngestError::Open {
                source_name: source.name.clone(),
                uri: source.location.shown().to_string(),
                reason: "Could not open resource for reading and writing".into(),
            });
        }
        Ok(Box::new(Frames::new(10.0, self.seconds)))
    }
}

struct Run {
    board: StatusBoard,
    jobs: Vec<WindowJob>,
    opens: usize,
}

fn run(
    source: SourceConfig,
    opener: Scripted,
    clock: Arc<ManualClock>,
    queue: usize,
    stop: Arc<AtomicBool>,
) -> Run {
    let opener = Arc::new(opener);
    let board = StatusBoard::default();
    board.register(&source);
    let (tx, rx) = crossbeam_channel::bounded(queue);
    let runner = SourceRunner {
        source,
        window: Duration::from_secs(1),
        keyframes: KeyframeConfig {
            select: Selection::All,
            skip_unchanged: false,
            ..KeyframeConfig::default()
        },
        recipe: PreprocessConfig::default(),
        daemon: DaemonConfig {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(8),
            ..DaemonConfig::default()
        },
        opener: opener.clone(),
        clock,
        board: board.clone(),
        jobs: tx,
        stop,
        progress: Arc::new(NoProgress),
    };
    runner.run();
    drop(runner);
    Run {
        board,
        jobs: rx.try_iter().collect(),
        opens: opener.opens.load(Ordering::SeqCst),
    }
}

#[test]
fn a_live_source_backs_off_exponentially_and_starts_over_after_streaming() {
    let clock = Arc::new(ManualClock::new(5));
    let stop = Arc::new(AtomicBool::new(false));
    let opener = Scripted {
        opens: AtomicUsize::new(0),
        failures: 3,
        seconds: 3.0,
        stop_on: None,
    };
    let source = SourceConfig::new("cam", "rtsp://user:pw@10.0.0.9/stream");
    let r = run(source, opener, clock.clone(), 100, stop);
    let sleeps = clock.sleeps();
    // Three failures: 1, 2, 4 s bases with up to half of each as jitter.
    let bases = [1.0, 2.0, 4.0, 1.0, 1.0];
    assert_eq!(sleeps.len(), 5, "{sleeps:?}");
    for (s, base) in sleeps.iter().zip(bases) {
        assert!(*s >= base / 2.0 && *s <= base, "{sleeps:?}");
    }
    let status = r.board.get("cam").unwrap();
    assert_eq!(status.state, SourceState::Stopped);
    // Four attempts after a failure or an end; two outages came back (after the three
    // failures, and after the first stream's end).
    assert_eq!((status.reconnects, status.retries), (2, 4));
    assert_eq!(status.frames, 60);
    assert!(!status.uri.contains("pw"));
    assert_eq!(r.opens, 5);
    // Two full streams of 3 s each: windows at wall-clock seconds, never overlapping.
    let starts: Vec<f64> = r.jobs.iter().map(|j| j.window_start).collect();
    assert!(starts.iter().all(|s| *s > 1_700_000_000.0), "{starts:?}");
    assert!(starts.windows(2).all(|w| w[1] > w[0]), "{starts:?}");
}

#[test]
fn a_live_source_drops_windows_when_inference_is_behind() {
    let clock = Arc::new(ManualClock::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let opener = Scripted {
        opens: AtomicUsize::new(0),
        failures: 0,
        seconds: 5.0,
        stop_on: None,
    };
    // Nobody takes windows from a queue of one: the first waits, the rest are dropped.
    let r = run(
        SourceConfig::new("cam", "rtsp://10.0.0.9/stream"),
        opener,
        clock,
        1,
        stop,
    );
    let status = r.board.get("cam").unwrap();
    assert_eq!(r.jobs.len(), 1);
    assert_eq!(status.windows, 1);
    // Five 1-second windows of 10 frames; the last one ends with the stream.
    assert_eq!(status.windows_dropped, 4);
    assert_eq!(status.frames_dropped, 40);
}

#[test]
fn a_broken_file_fails_once_without_retrying() {
    let clock = Arc::new(ManualClock::new(100));
    let stop = Arc::new(AtomicBool::new(false));
    let opener = Scripted {
        opens: AtomicUsize::new(0),
        failures: 1,
        seconds: 1.0,
        stop_on: None,
    };
    let r = run(
        SourceConfig::new("clip", "/videos/missing.mp4"),
        opener,
        clock.clone(),
        10,
        stop,
    );
    let status = r.board.get("clip").unwrap();
    assert_eq!(status.state, SourceState::Failed);
    assert!(status.reason.unwrap().contains("Could not open"));
    assert_eq!(r.opens, 1);
    assert!(clock.sleeps().is_empty());
}

#[test]
fn a_looped_file_keeps_moving_forward_in_media_time() {
    let clock = Arc::new(ManualClock::new(100));
    let stop = Arc::new(AtomicBool::new(false));
    let opener = Scripted {
        opens: AtomicUsize::new(0),
        failures: 0,
        seconds: 2.5,
        stop_on: Some((4, stop.clone())),
    };
    let mut source = SourceConfig::new("loop", "/videos/demo.mp4");
    source.looped = true;
    let r = run(source, opener, clock.clone(), 100, stop);
    // Three whole passes (the fourth open sees the stop flag first); each pass of 2.5 s
    // starts at the next whole window, so no window is written twice.
    let starts: Vec<f64> = r.jobs.iter().map(|j| j.window_start).collect();
    assert!(starts.windows(2).all(|w| w[1] > w[0]), "{starts:?}");
    assert!(starts.contains(&3.0) && starts.contains(&6.0), "{starts:?}");
    assert!(clock.sleeps().is_empty(), "a loop restarts without backoff");
    assert_eq!(r.board.get("loop").unwrap().state, SourceState::Stopped);
}
