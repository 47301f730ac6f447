//! The threads of a run: one inference thread and one thread per source, started together
//! and drained together.
//!
//! Rules: only the source threads hold senders of the window queue, so when they are all
//! done inference drains the queue and ends by itself. Draining stops the sources first,
//! then gives inference until `daemon.shutdown_timeout` to write what is queued; what is
//! still queued after that is abandoned and counted, never written half.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};

use super::config::Config;
use super::environment::Environment;
use super::error::RunError;
use super::opener::{GstOpener, SourceOpener};
use super::startup::Prepared;
use super::status::{StageBeat, StatusBoard};
use super::supervise::SourceRunner;
use super::tagger::WindowJob;
use super::worker::{InferenceOutcome, InferenceWorker, WorkerControl};
use crate::ingest::{IngestError, SourceConfig};
use crate::store::StoreWriter;

/// A run's threads and what the daemon loop watches them through.
pub(super) struct Running {
    pub board: StatusBoard,
    pub writer: Arc<StoreWriter>,
    pub inference_beat: Arc<StageBeat>,
    pub control: Sender<WorkerControl>,
    worker: JoinHandle<InferenceOutcome>,
    sources: Vec<(String, JoinHandle<()>)>,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
}

impl Running {
    /// Start inference and a thread for each of `sources`.
    pub fn start(
        config: &Config,
        sources: &[SourceConfig],
        prepared: Prepared,
        env: &Environment,
    ) -> Result<Running, RunError> {
        let Prepared {
            tagger,
            store,
            writer,
            recipe,
            ..
        } = prepared;
        let (jobs_tx, jobs_rx) = bounded::<WindowJob>(config.daemon.queue);
        let (control, control_rx) = bounded::<WorkerControl>(4);
        let inference_beat = Arc::new(StageBeat::default());
        let abort = Arc::new(AtomicBool::new(false));
        let worker = InferenceWorker {
            tagger,
            store,
            writer: writer.clone(),
            labels_path: config.labels_path.clone(),
            beat: inference_beat.clone(),
            abort: abort.clone(),
            classify: config.classify.clone(),
            backfill: None,
        };
        let worker = std::thread::Builder::new()
            .name("cliptag-inference".into())
            .spawn(move || worker.run(jobs_rx, control_rx))
            .map_err(|e| IngestError::Init(format!("cannot start the inference thread: {e}")))?;

        let board = StatusBoard::default();
        let stop = Arc::new(AtomicBool::new(false));
        let opener: Arc<dyn SourceOpener> = env.opener.clone().unwrap_or_else(|| {
            Arc::new(GstOpener {
                sampling: config.sampling,
                stall_timeout: config.daemon.stall_timeout,
            })
        });
        let mut threads = Vec::new();
        for source in sources {
            board.register(source);
            let runner = SourceRunner {
                source: source.clone(),
                window: config.window,
                keyframes: config.keyframes.clone(),
                recipe: recipe.clone(),
                daemon: config.daemon.clone(),
                opener: opener.clone(),
                clock: env.clock.clone(),
                board: board.clone(),
                jobs: jobs_tx.clone(),
                stop: stop.clone(),
                progress: env.progress.clone(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("source-{}", source.name))
                .spawn(move || runner.run())
                .map_err(|e| IngestError::Init(format!("cannot start a source thread: {e}")))?;
            threads.push((source.name.clone(), handle));
        }
        Ok(Running {
            board,
            writer,
            inference_beat,
            control,
            worker,
            sources: threads,
            stop,
            abort,
        })
    }

    pub fn inference_finished(&self) -> bool {
        self.worker.is_finished()
    }

    /// Sources whose threads have ended.
    pub fn finished_sources(&self) -> impl Iterator<Item = &str> {
        self.sources
            .iter()
            .filter(|(_, h)| h.is_finished())
            .map(|(name, _)| name.as_str())
    }

    /// Every source thread has ended, or inference has (nothing more can be tagged).
    pub fn done(&self) -> bool {
        self.worker.is_finished() || self.sources.iter().all(|(_, h)| h.is_finished())
    }

    /// Stop the sources, let inference write what is queued (within the shutdown timeout),
    /// and join what ended. Returns what inference reported and the writer, now the
    /// daemon's alone unless a thread that did not end still holds it.
    pub fn drain(self, shutdown_timeout: Duration) -> (InferenceOutcome, Arc<StoreWriter>) {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + shutdown_timeout;
        while Instant::now() < deadline
            && !(self.worker.is_finished() && self.sources.iter().all(|(_, h)| h.is_finished()))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !self.worker.is_finished() {
            self.abort.store(true, Ordering::SeqCst);
            tracing::error!(
                timeout_s = shutdown_timeout.as_secs_f64(),
                "shutdown deadline passed: windows still queued are abandoned"
            );
            // The worker checks the flag between batches; give the current one a moment.
            let grace = Instant::now() + Duration::from_secs(2);
            while Instant::now() < grace && !self.worker.is_finished() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let outcome = if self.worker.is_finished() {
            self.worker.join().unwrap_or_else(|_| InferenceOutcome {
                fatal: Some(RunError::WorkerPanicked),
                ..Default::default()
            })
        } else {
            InferenceOutcome::default()
        };
        for (_, handle) in self.sources {
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        drop(self.control);
        (outcome, self.writer)
    }
}
