//! The daemon loop: the one thread that never waits on a stage, so it can always answer a
//! signal, tell systemd how things stand, judge the watchdog and notice a dead writer.
//!
//! Rules: WATCHDOG=1 goes out only while inference, every running source and the writer
//! make progress; a stage silent for half the watchdog period (never less than a second)
//! counts as stuck. Source states reach SQLite on change, and with fresh counters every
//! few seconds.

use std::time::{Duration, Instant};

use super::config::Config;
use super::environment::Environment;
use super::report::report_of;
use super::running::Running;
use super::signals::ControlEvent;
use super::states::{check_writer, StatePublisher, STATE_REFRESH};
use super::status::SourceState;
use super::worker::WorkerControl;
use crate::store::{StoreError, WriterPause};

/// Why the loop ended.
#[derive(Debug, Default)]
pub(super) struct LoopEnd {
    /// SIGTERM/SIGINT rather than every source ending.
    pub stopped_by_signal: bool,
    /// The writer cannot go on; tagging on without a database would lose everything.
    pub writer_failure: Option<StoreError>,
}

/// Run until the sources are done, a signal says stop, or the writer fails.
pub(super) fn supervise(
    config: &Config,
    running: &Running,
    states: &mut StatePublisher,
    env: &Environment,
) -> LoopEnd {
    let notifier = &env.notifier;
    let tick = notifier
        .watchdog()
        .map(|w| (w / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(1));
    // A stage is stuck when it has shown no sign of life for half the watchdog period
    // (systemd's own advice is to ping at half the period), but never less than a second.
    let stale_after = notifier
        .watchdog()
        .map(|w| (w / 2).max(Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(30));
    let mut last_status = String::new();
    let mut last_writer_check = Instant::now();
    let mut finished_reported: Vec<String> = Vec::new();
    let mut end = LoopEnd::default();
    loop {
        let event = match env.events.recv_timeout(tick) {
            Ok(e) => Some(e),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
            // Nobody can send events any more (tests that drop the sender): keep running.
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(tick);
                None
            }
        };
        match event {
            Some(ControlEvent::Shutdown) => {
                end.stopped_by_signal = true;
                tracing::info!("shutting down: draining windows in flight");
                break;
            }
            Some(ControlEvent::Reload) => reload(config, running),
            None => {}
        }
        states.publish(&running.board, &running.writer, env.clock.now(), false);
        let newly_finished: Vec<String> = running
            .finished_sources()
            .filter(|name| !finished_reported.iter().any(|r| r == name))
            .map(str::to_string)
            .collect();
        for name in newly_finished {
            if let Some(status) = running.board.get(&name) {
                env.progress.source_finished(&report_of(&status));
            }
            finished_reported.push(name);
        }
        let status = status_line(
            &running.board.summary(),
            running.writer.paused(),
            env.clock.now(),
        );
        if status != last_status {
            notifier.status(&status);
            last_status = status;
        }
        if notifier.watchdog().is_some() || last_writer_check.elapsed() >= STATE_REFRESH {
            last_writer_check = Instant::now();
            if let Err(e) = check_writer(&running.writer) {
                tracing::error!("the database writer cannot go on, stopping: {e}");
                end.writer_failure = Some(e);
                break;
            }
        }
        if notifier.watchdog().is_some() {
            let sources_alive = running.board.snapshot().iter().all(|s| {
                matches!(
                    s.state,
                    SourceState::Failed | SourceState::Finished | SourceState::Stopped
                ) || s.silent_for() < stale_after
            });
            let inference_alive =
                running.inference_beat.age() < stale_after || running.inference_finished();
            // Its thread wakes every second, also while it holds writes on a full disk
            // (a pause is reported in STATUS=, not by a restart that cannot help).
            let writer_alive = running.writer.silent_for() < stale_after;
            if sources_alive && inference_alive && writer_alive {
                notifier.watchdog_ping();
            } else {
                tracing::warn!(
                    sources_alive,
                    inference_alive,
                    writer_alive,
                    "a stage is stuck: withholding the watchdog ping"
                );
            }
        }
        if running.done() {
            break;
        }
    }
    end
}

/// systemd's STATUS=: a pause of the writer first (it stops all tagging), then each
/// source. One line.
fn status_line(sources: &str, pause: Option<WriterPause>, now: f64) -> String {
    let sources = sources.replace('\n', " ");
    match pause {
        Some(p) => format!(
            "tagging paused for {}: {}; {sources}",
            crate::times::duration(now - p.since),
            p.reason
        ),
        None => sources,
    }
}

/// SIGHUP: templates and the probe head come from the config as it is now; the labels file
/// is the one the daemon started with.
fn reload(config: &Config, running: &Running) {
    let classify = match Config::load(&config.path) {
        Ok(c) => c.classify,
        Err(e) => {
            tracing::error!("config not re-read, the previous prompt templates and head stay: {e}");
            config.classify.clone()
        }
    };
    tracing::info!("reloading labels from {}", config.labels_path.display());
    if running
        .control
        .try_send(WorkerControl::Reload { classify })
        .is_err()
    {
        tracing::warn!("a label reload is already pending");
    }
}
