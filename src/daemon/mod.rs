//! Daemon: wire the stages together and keep them running for months.
//!
//! ```text
//!  source threads (one per camera/file, supervise.rs)
//!     │  WindowJob, bounded queue: files wait, live sources drop and count
//!     ▼
//!  inference thread (tagger.rs): batches windows across sources, one CLIP call
//!     │  NewSegment
//!     ▼
//!  store writer thread: batched transactions, retention
//!
//!  daemon loop (control.rs): signals, sd_notify status and watchdog, source states → SQLite
//! ```
//!
//! A run (this file) is three steps: [`startup`] (model, database, labels: every mistake
//! that can stop a run stops it here), [`running`] (the threads, started and drained
//! together) and [`control`] (the loop in between). The source side is [`supervise`]
//! (with [`backoff`], [`opener`], [`status`]); the inference side [`worker`] and
//! [`tagger`]; the rest are the pieces they share.
//!
//! Rules:
//! - Nothing heavy runs on a GStreamer streaming thread, and the daemon loop never waits on
//!   a stage, so it can always answer a signal and judge the watchdog.
//! - A source that fails is reported and retried (live) or given up (files); the others
//!   carry on. A run fails only when nothing at all could be processed.
//! - SIGTERM/SIGINT: sources stop taking frames, windows already cut are tagged and written,
//!   and the run returns within `daemon.shutdown_timeout`. SIGHUP reloads the labels file
//!   and prompt templates; a broken file is rejected and the previous labels stay.
//! - WATCHDOG=1 goes out only while the inference thread, every running source and the
//!   writer are making progress.

pub mod backfill;
pub mod backoff;
pub mod config;
pub mod control;
pub mod environment;
pub mod error;
pub mod generation;
pub mod labels;
pub mod notify;
pub mod opener;
pub mod progress;
pub mod report;
pub mod running;
pub mod settings;
pub mod signals;
pub mod startup;
pub mod states;
pub mod status;
pub mod supervise;
pub mod tagger;
pub mod worker;

pub use backoff::Backoff;
pub use config::{Config, ConfigError};
pub use environment::Environment;
pub use error::RunError;
pub use labels::{labels_plan, other_model, prepare_labels, LabelsPlan};
pub use notify::Notifier;
pub use opener::{GstOpener, SourceOpener};
pub use progress::{LogProgress, NoProgress, Progress};
pub use report::{RunOptions, RunReport, SourceReport};
pub use settings::{DaemonConfig, DaemonSection};
pub use signals::{listen_for_signals, ControlEvent};
pub use status::{SourceState, SourceStatus, StageBeat, StatusBoard};
pub use supervise::SourceRunner;
pub use tagger::{Tagger, WindowContent, WindowJob, WindowStamp};

use crate::ingest::SourceConfig;

/// Run the configured sources until they end (files) or until told to stop.
pub fn run(config: &Config, options: &RunOptions, env: Environment) -> Result<RunReport, RunError> {
    if config.sources.is_empty() {
        return Err(RunError::NoSources {
            config: config.path.display().to_string(),
        });
    }
    crate::ingest::init()?;
    let prepared = startup::prepare(config, options, &env)?;
    let (model_id, prompts_encoded, skipped) = (
        prepared.model_id.clone(),
        prepared.prompts_encoded,
        prepared.skipped.clone(),
    );
    let labels = prepared.labels;
    let sources: Vec<SourceConfig> = config
        .sources
        .iter()
        .filter(|s| !skipped.contains(&s.name))
        .cloned()
        .collect();
    let running = running::Running::start(config, &sources, prepared, &env)?;
    env.notifier
        .ready(&format!("{} sources, {labels} labels", sources.len()));
    tracing::info!(
        sources = sources.len(),
        skipped = skipped.len(),
        "daemon ready"
    );

    let mut states = states::StatePublisher::new();
    let end = control::supervise(config, &running, &mut states, &env);

    env.notifier.stopping();
    let board = running.board.clone();
    let (outcome, writer) = running.drain(config.daemon.shutdown_timeout);
    states.publish(&board, &writer, env.clock.now(), true);
    match std::sync::Arc::try_unwrap(writer) {
        Ok(w) => {
            w.close()?;
        }
        Err(w) => w.flush()?,
    }
    if outcome.abandoned > 0 {
        tracing::warn!(windows = outcome.abandoned, "windows abandoned at shutdown");
    }
    if let Some(e) = outcome.fatal {
        return Err(e);
    }
    if let Some(e) = end.writer_failure {
        return Err(e.into());
    }
    Ok(RunReport {
        model_id,
        // The labels in force at the end: a reload may have changed them.
        labels: if outcome.labels > 0 {
            outcome.labels
        } else {
            labels
        },
        prompts_encoded,
        skipped,
        sources: board
            .snapshot()
            .iter()
            .map(|status| SourceReport {
                windows: outcome.written.get(&status.name).copied().unwrap_or(0),
                ..report::report_of(status)
            })
            .collect(),
        stopped_by_signal: end.stopped_by_signal,
        abandoned_windows: outcome.abandoned,
        failed_windows: outcome.failed_windows,
    })
}
