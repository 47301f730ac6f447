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
//!  daemon loop (this file): signals, sd_notify status and watchdog, source states → SQLite
//! ```
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

pub mod notify;
pub mod supervise;
pub mod tagger;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, select, Receiver};

use crate::classify::{expand_labels, load_labels, LabelError, LabelSet, LearnedLabels, ProbeHead};
use crate::clip::{ClipError, ClipModel, LoadOptions, TextTower, MAX_BATCH};
use crate::config::{ClassifyConfig, Config, ModelVariant};
use crate::ingest::{FrameSource, GstSource, IngestError, Sampling};
use crate::store::{
    LabelRecord, ModelRecord, Retention, SourceStateRecord, Store, StoreError, StoreWriter,
    WriterOptions,
};

pub use notify::Notifier;
pub use supervise::{
    Backoff, Clock, GstOpener, SourceOpener, SourceRunner, SourceState, SourceStatus, StageBeat,
    StatusBoard, SystemClock,
};
pub use tagger::{job_from_window, selector_for, Tagger, WindowJob};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Clip(#[from] ClipError),
    #[error(transparent)]
    Labels(#[from] LabelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("database {db} already holds segments from model {existing}, and the configured model is {new}; embeddings of different models cannot be compared. Start a new model generation with --new-model-generation (old segments stay queryable) or use another database")]
    ModelChanged {
        db: String,
        existing: String,
        new: String,
    },
    #[error("no source could be processed")]
    NothingProcessed,
    #[error("config file {config}: no [[source]] is configured; add a camera or a file to tag")]
    NoSources { config: String },
    #[error("the inference thread panicked")]
    WorkerPanicked,
}

impl RunError {
    pub fn disposition(&self) -> crate::Disposition {
        match self {
            RunError::Clip(e) => e.disposition(),
            RunError::Labels(e) => e.disposition(),
            RunError::Store(e) => e.disposition(),
            RunError::Ingest(e) => e.disposition(),
            RunError::ModelChanged { .. }
            | RunError::NothingProcessed
            | RunError::NoSources { .. } => crate::Disposition::Stop,
            RunError::WorkerPanicked => crate::Disposition::Retry,
        }
    }
}

/// Options of a run that are not part of the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Accept a database holding segments of another model.
    pub new_model_generation: bool,
}

/// What happened to one source.
#[derive(Debug, Clone, Default)]
pub struct SourceReport {
    pub name: String,
    /// Windows written to the database.
    pub windows: u64,
    pub frames: u64,
    pub frames_dropped: u64,
    pub reconnects: u64,
    /// The source's last state ("finished", "failed", "stopped", ...).
    pub state: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub model_id: String,
    pub labels: usize,
    pub prompts_encoded: usize,
    pub sources: Vec<SourceReport>,
    /// Ended by SIGTERM/SIGINT rather than by every source ending.
    pub stopped_by_signal: bool,
    /// Windows still queued when the shutdown deadline passed.
    pub abandoned_windows: u64,
    /// Windows CLIP failed on (logged; the source carried on).
    pub failed_windows: u64,
}

impl RunReport {
    pub fn anything_processed(&self) -> bool {
        self.sources.iter().any(|s| s.windows > 0)
    }
}

/// Progress callbacks, so the binary can draw a bar without the library knowing about TTYs.
pub trait Progress: Send + Sync {
    fn source_started(&self, _name: &str, _duration: Option<f64>) {}
    fn window_done(&self, _source: &str, _end: f64) {}
    fn source_finished(&self, _report: &SourceReport) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Labels with embeddings, using and filling the store's per-prompt cache.
/// Returns the label set and how many prompts had to be encoded.
pub fn prepare_labels(
    model: &ClipModel,
    store: &Store,
    writer: &StoreWriter,
    labels_path: &Path,
    classify: &ClassifyConfig,
) -> Result<(LabelSet, usize), RunError> {
    // The head first: a wrong one should stop before any text is encoded.
    let head = classify
        .head
        .as_deref()
        .map(|path| load_head(path, &model.id))
        .transpose()?;
    let learned = classify
        .label_embeddings
        .as_deref()
        .map(|path| load_learned_labels(path, &model.id))
        .transpose()?;
    let labels = expand_labels(&load_labels(labels_path)?, &classify.prompt_templates);
    let mut prompts: Vec<String> = labels
        .iter()
        .flat_map(|l| l.prompts.iter().cloned())
        .collect();
    prompts.sort();
    prompts.dedup();
    let mut cache = store.cached_text_embeddings(&model.id, &prompts)?;
    let missing: Vec<String> = prompts
        .iter()
        .filter(|p| !cache.contains_key(*p))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let encoded = model.embed_texts(&missing);
        model.release_text_encoder();
        let encoded = encoded?;
        let fresh: Vec<(String, Vec<f32>)> = missing
            .iter()
            .cloned()
            .zip(encoded.into_iter().map(|(_, e)| e))
            .collect();
        writer.put_text_embeddings(&model.id, fresh.clone())?;
        cache.extend(fresh);
    }
    let mut set = LabelSet::build(labels, |p| {
        cache.get(p).cloned().ok_or_else(|| ClipError::Tokenize {
            text: p.to_string(),
            reason: "prompt embedding missing".into(),
        })
    })?;
    if let Some((path, learned)) = &learned {
        for (label, embedding) in set.labels.iter().zip(set.embeddings.iter_mut()) {
            if let Some(e) = learned.get(&label.text) {
                if e.len() != embedding.len() {
                    return Err(LabelError::Learned {
                        path: path.display().to_string(),
                        reason: format!(
                            "embeddings of dimension {}, the model's have {}",
                            e.len(),
                            embedding.len()
                        ),
                    }
                    .into());
                }
                *embedding = crate::clip::l2_normalized(e.to_vec());
            }
        }
        let unused: Vec<&str> = learned
            .labels
            .iter()
            .map(|l| l.label.as_str())
            .filter(|l| !set.labels.iter().any(|s| s.text == *l))
            .collect();
        if !unused.is_empty() {
            tracing::warn!(file = %path.display(), ?unused, "learned label embeddings for labels not in the labels file are not used");
        }
    }
    if let (Some((path, head)), Some(dim)) = (head, set.embeddings.first().map(Vec::len)) {
        if head.dim() != dim {
            return Err(LabelError::Head {
                path: path.display().to_string(),
                reason: format!(
                    "weights of dimension {}, the model's embeddings have {dim}",
                    head.dim()
                ),
            }
            .into());
        }
        set.head = Some(head.for_labels(&set.labels, path)?);
    }
    let records = set
        .labels
        .iter()
        .zip(&set.embeddings)
        .map(|(l, e)| LabelRecord {
            text: l.text.clone(),
            prompts: l.prompts.clone(),
            embedding: e.clone(),
        })
        .collect();
    writer.set_labels(&model.id, records)?;
    Ok((set, missing.len()))
}

/// A probe head, refused unless it was trained on this model's embeddings.
fn load_head<'a>(path: &'a Path, model_id: &str) -> Result<(&'a Path, ProbeHead), RunError> {
    let head = ProbeHead::load(path)?;
    match other_model(&head.model_id, model_id) {
        Some(reason) => Err(LabelError::Head {
            path: path.display().to_string(),
            reason,
        }
        .into()),
        None => Ok((path, head)),
    }
}

/// Learned label embeddings, refused unless they were learned on this model's embeddings.
fn load_learned_labels<'a>(
    path: &'a Path,
    model_id: &str,
) -> Result<(&'a Path, LearnedLabels), RunError> {
    let learned = LearnedLabels::load(path)?;
    match other_model(&learned.model_id, model_id) {
        Some(reason) => Err(LabelError::Learned {
            path: path.display().to_string(),
            reason,
        }
        .into()),
        None => Ok((path, learned)),
    }
}

/// Why a tuned file made for `file_model` does not fit a daemon running `model_id`.
fn other_model(file_model: &str, model_id: &str) -> Option<String> {
    (file_model != model_id).then(|| {
        format!(
            "made from embeddings of model {file_model}, but this daemon runs model {model_id} (same directory and variant as when it was tuned?)"
        )
    })
}

/// `variant = "auto"` picks the int8 files, but a database built before that default by the
/// fp32 files of the same model would then refuse to start. In that one case the daemon
/// stays on fp32 and says so; switching is a deliberate `variant = "quantized"` plus
/// `--new-model-generation`.
fn keep_fp32_generation(
    config: &Config,
    model: &ClipModel,
    store: &Store,
    options: &RunOptions,
) -> Result<Option<ClipModel>, RunError> {
    if config.model.variant != ModelVariant::Auto
        || model.spec.variant == ModelVariant::Fp32
        || options.new_model_generation
    {
        return Ok(None);
    }
    let existing = store.models_with_segments()?;
    if existing.is_empty() || existing.contains(&model.id) {
        return Ok(None);
    }
    let fp32_id =
        crate::clip::model_id(&config.model.dir, ModelVariant::Fp32, config.model.layout)?;
    if !existing.contains(&fp32_id) {
        return Ok(None);
    }
    tracing::info!(
        db = %store.path().display(),
        "variant \"auto\": the database holds this model's fp32 embeddings, so the fp32 files are used; set variant = \"quantized\" and start once with --new-model-generation to move to int8"
    );
    Ok(Some(ClipModel::load_with(
        &config.model.dir,
        &LoadOptions {
            variant: ModelVariant::Fp32,
            ..LoadOptions::from_config(&config.model, TextTower::WhenNeeded)
        },
    )?))
}

/// Refuse to mix two models' embeddings in one database unless asked to.
fn check_model_generation(
    store: &Store,
    model_id: &str,
    options: &RunOptions,
) -> Result<(), RunError> {
    if options.new_model_generation {
        return Ok(());
    }
    if let Some(existing) = store
        .models_with_segments()?
        .into_iter()
        .find(|m| m != model_id)
    {
        return Err(RunError::ModelChanged {
            db: store.path().display().to_string(),
            existing,
            new: model_id.to_string(),
        });
    }
    Ok(())
}

/// What the daemon loop is told from outside: the binary maps signals onto these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlEvent {
    /// SIGTERM/SIGINT: drain and return.
    Shutdown,
    /// SIGHUP: reload the labels file and prompt templates.
    Reload,
}

/// Turn SIGTERM/SIGINT/SIGHUP into [`ControlEvent`]s. A second SIGTERM or SIGINT while the
/// first is draining exits the process at once with status 130: the operator insists.
pub fn listen_for_signals() -> std::io::Result<Receiver<ControlEvent>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let insisted = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        // Order matters: the conditional exit must see the flag set by an earlier signal,
        // so it is registered before the handler that sets it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, insisted.clone())?;
        signal_hook::flag::register(signal, insisted.clone())?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = bounded(16);
    std::thread::Builder::new()
        .name("cliptag-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let event = if signal == SIGHUP {
                    ControlEvent::Reload
                } else {
                    ControlEvent::Shutdown
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

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

/// What the inference thread reports when it ends.
#[derive(Debug, Default)]
struct InferenceOutcome {
    written: HashMap<String, u64>,
    failed_windows: u64,
    abandoned: u64,
    fatal: Option<RunError>,
}

enum WorkerControl {
    Reload { classify: ClassifyConfig },
}

/// The inference thread: windows in, segments to the writer; label reloads on request.
struct InferenceWorker {
    tagger: Tagger<ClipModel>,
    store: Store,
    writer: Arc<StoreWriter>,
    labels_path: std::path::PathBuf,
    beat: Arc<StageBeat>,
    abort: Arc<AtomicBool>,
}

impl InferenceWorker {
    fn run(
        mut self,
        jobs: Receiver<WindowJob>,
        control: Receiver<WorkerControl>,
    ) -> InferenceOutcome {
        let mut outcome = InferenceOutcome::default();
        let mut control = Some(control);
        let never = crossbeam_channel::never();
        loop {
            self.beat.beat();
            if self.abort.load(Ordering::SeqCst) {
                outcome.abandoned += jobs.try_iter().count() as u64;
                break;
            }
            let control_rx = control.as_ref().unwrap_or(&never);
            select! {
                recv(control_rx) -> msg => match msg {
                    Ok(WorkerControl::Reload { classify }) => self.reload(&classify),
                    Err(_) => control = None,
                },
                recv(jobs) -> job => match job {
                    Ok(first) => {
                        let mut batch = vec![first];
                        let mut images: usize = batch[0].pixels.len();
                        while images < MAX_BATCH {
                            match jobs.try_recv() {
                                Ok(job) => {
                                    images += job.pixels.len();
                                    batch.push(job);
                                }
                                Err(_) => break,
                            }
                        }
                        if let Err(e) = self.tag_and_write(batch, &mut outcome) {
                            outcome.fatal = Some(e);
                            self.abort.store(true, Ordering::SeqCst);
                        }
                    }
                    // Every source is done and the daemon dropped its sender.
                    Err(_) => break,
                },
                default(Duration::from_millis(200)) => {}
            }
        }
        outcome
    }

    fn tag_and_write(
        &mut self,
        batch: Vec<WindowJob>,
        outcome: &mut InferenceOutcome,
    ) -> Result<(), RunError> {
        let count = batch.len() as u64;
        let segments = match self.tagger.tag_batch(batch) {
            Ok(s) => s,
            Err(e) if e.disposition() != crate::Disposition::Stop => {
                tracing::error!("{count} window(s) not tagged: {e}");
                outcome.failed_windows += count;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        for segment in segments {
            let source = segment.source.clone();
            self.writer.write_segment(segment)?;
            *outcome.written.entry(source).or_default() += 1;
        }
        Ok(())
    }

    fn reload(&mut self, classify: &ClassifyConfig) {
        let started = Instant::now();
        match prepare_labels(
            &self.tagger.embedder,
            &self.store,
            &self.writer,
            &self.labels_path,
            classify,
        ) {
            Ok((labels, encoded)) => {
                tracing::info!(
                    labels = labels.labels.len(),
                    prompts_encoded = encoded,
                    ms = started.elapsed().as_millis() as u64,
                    "labels reloaded from {}",
                    self.labels_path.display()
                );
                self.tagger.labels = labels;
            }
            Err(e) => tracing::error!(
                "labels not reloaded, the previous {} labels stay in force: {e}",
                self.tagger.labels.labels.len()
            ),
        }
    }
}

/// Run the configured sources until they end (files) or until told to stop.
pub fn run(config: &Config, options: &RunOptions, env: Environment) -> Result<RunReport, RunError> {
    if config.sources.is_empty() {
        return Err(RunError::NoSources {
            config: config.path.display().to_string(),
        });
    }
    crate::ingest::init()?;
    // The text tower loads only if some label's prompts are not in the database's cache,
    // and is released once they are embedded: the daemon then holds the vision tower alone.
    let mut model = ClipModel::load_with(
        &config.model.dir,
        &LoadOptions::from_config(&config.model, TextTower::WhenNeeded),
    )?;
    let store = Store::open(&config.database)?;
    if let Some(fp32) = keep_fp32_generation(config, &model, &store, options)? {
        model = fp32;
    }
    tracing::info!(model = %model.id, variant = ?model.spec.variant, device = %model.device, dim = model.embedding_dim, load_ms = model.load_time.as_millis() as u64, "model loaded");
    check_model_generation(&store, &model.id, options)?;
    let writer = Arc::new(StoreWriter::spawn_with(
        &config.database,
        WriterOptions {
            retention: Retention {
                max_age: config.retention.max_age,
                max_db_bytes: config.retention.max_db_bytes,
            },
            ..WriterOptions::default()
        },
    )?);
    if config.retention.max_age.is_some() || config.retention.max_db_bytes.is_some() {
        let r = writer.enforce_retention(env.clock.now())?;
        if r.segments_deleted > 0 {
            tracing::info!(segments = r.segments_deleted, "retention at start-up");
        }
    }
    writer.register_model(ModelRecord {
        id: model.id.clone(),
        path: model.dir.display().to_string(),
        embedding_dim: model.embedding_dim,
    })?;
    let (labels, prompts_encoded) = prepare_labels(
        &model,
        &store,
        &writer,
        &config.labels_path,
        &config.classify,
    )?;
    tracing::info!(
        labels = labels.labels.len(),
        prompts_encoded,
        "labels ready"
    );

    let model_id = model.id.clone();
    let recipe = model.preprocess.clone();
    let label_count = labels.labels.len();
    let tagger = Tagger::new(
        model,
        model_id.clone(),
        labels,
        config.keyframes.clone(),
        &config.classify,
    );

    let (jobs_tx, jobs_rx) = bounded::<WindowJob>(config.daemon.queue);
    let (control_tx, control_rx) = bounded::<WorkerControl>(4);
    let inference_beat = Arc::new(StageBeat::default());
    let abort = Arc::new(AtomicBool::new(false));
    let worker = InferenceWorker {
        tagger,
        store,
        writer: writer.clone(),
        labels_path: config.labels_path.clone(),
        beat: inference_beat.clone(),
        abort: abort.clone(),
    };
    let worker_handle = std::thread::Builder::new()
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
    let mut sources: Vec<(String, JoinHandle<()>)> = Vec::new();
    for source in &config.sources {
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
        sources.push((source.name.clone(), handle));
    }
    // Only the source threads hold senders now: when they are all done, inference drains
    // the queue and ends.
    drop(jobs_tx);

    let notifier = &env.notifier;
    notifier.ready(&format!(
        "{} sources, {} labels",
        config.sources.len(),
        label_count
    ));
    tracing::info!(sources = config.sources.len(), "daemon ready");

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
    let mut states = StatePublisher::new();
    let mut last_writer_check = Instant::now();
    let mut writer_failure: Option<StoreError> = None;
    let mut stopped_by_signal = false;
    let mut finished_reported: Vec<String> = Vec::new();
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
                stopped_by_signal = true;
                tracing::info!("shutting down: draining windows in flight");
                break;
            }
            Some(ControlEvent::Reload) => {
                // Templates and the probe head come from the config as it is now; the
                // labels file is the one the daemon started with.
                let classify = match Config::load(&config.path) {
                    Ok(c) => c.classify,
                    Err(e) => {
                        tracing::error!(
                            "config not re-read, the previous prompt templates and head stay: {e}"
                        );
                        config.classify.clone()
                    }
                };
                tracing::info!("reloading labels from {}", config.labels_path.display());
                if control_tx
                    .try_send(WorkerControl::Reload { classify })
                    .is_err()
                {
                    tracing::warn!("a label reload is already pending");
                }
            }
            None => {}
        }
        states.publish(&board, &writer, false);
        for (name, handle) in &sources {
            if handle.is_finished() && !finished_reported.contains(name) {
                finished_reported.push(name.clone());
                if let Some(status) = board.get(name) {
                    env.progress.source_finished(&report_of(&status));
                }
            }
        }
        let status = board.summary().replace('\n', " ");
        if status != last_status {
            notifier.status(&status);
            last_status = status;
        }
        if notifier.watchdog().is_some() || last_writer_check.elapsed() >= STATE_REFRESH {
            last_writer_check = Instant::now();
            if let Err(e) = check_writer(&writer) {
                // Tagging on without a database loses everything; a restart may recover.
                tracing::error!("the database writer cannot go on, stopping: {e}");
                writer_failure = Some(e);
                break;
            }
        }
        if notifier.watchdog().is_some() {
            let sources_alive = board.snapshot().iter().all(|s| {
                matches!(
                    s.state,
                    SourceState::Failed | SourceState::Finished | SourceState::Stopped
                ) || s.silent_for() < stale_after
            });
            let inference_alive = inference_beat.age() < stale_after || worker_handle.is_finished();
            // The writer just proved it still commits (check_writer above).
            if sources_alive && inference_alive {
                notifier.watchdog_ping();
            } else {
                tracing::warn!(
                    sources_alive,
                    inference_alive,
                    "a stage is stuck: withholding the watchdog ping"
                );
            }
        }
        if worker_handle.is_finished() || sources.iter().all(|(_, h)| h.is_finished()) {
            break;
        }
    }

    // Drain: sources stop taking frames; inference finishes what is queued.
    notifier.stopping();
    stop.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + config.daemon.shutdown_timeout;
    while Instant::now() < deadline
        && !(worker_handle.is_finished() && sources.iter().all(|(_, h)| h.is_finished()))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let drained = worker_handle.is_finished();
    if !drained {
        abort.store(true, Ordering::SeqCst);
        tracing::error!(
            timeout_s = config.daemon.shutdown_timeout.as_secs_f64(),
            "shutdown deadline passed: windows still queued are abandoned"
        );
        // The worker checks the flag between batches; give the current one a moment.
        let grace = Instant::now() + Duration::from_secs(2);
        while Instant::now() < grace && !worker_handle.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let outcome = if worker_handle.is_finished() {
        worker_handle.join().unwrap_or_else(|_| InferenceOutcome {
            fatal: Some(RunError::WorkerPanicked),
            ..Default::default()
        })
    } else {
        InferenceOutcome::default()
    };
    for (_, handle) in sources {
        if handle.is_finished() {
            let _ = handle.join();
        }
    }
    states.publish(&board, &writer, true);
    drop(control_tx);
    match Arc::try_unwrap(writer) {
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
    if let Some(e) = writer_failure {
        return Err(e.into());
    }

    let mut report = RunReport {
        model_id,
        labels: label_count,
        prompts_encoded,
        sources: Vec::new(),
        stopped_by_signal,
        abandoned_windows: outcome.abandoned,
        failed_windows: outcome.failed_windows,
    };
    for status in board.snapshot() {
        let mut r = report_of(&status);
        r.windows = outcome.written.get(&status.name).copied().unwrap_or(0);
        report.sources.push(r);
    }
    Ok(report)
}

fn report_of(status: &SourceStatus) -> SourceReport {
    SourceReport {
        name: status.name.clone(),
        windows: status.windows,
        frames: status.frames,
        frames_dropped: status.frames_dropped,
        reconnects: status.reconnects,
        state: status.state.label().to_string(),
        error: match status.state {
            SourceState::Failed => status.reason.clone(),
            _ => None,
        },
    }
}

/// Copies source states to SQLite for `cliptag status`: a source whose state or reason
/// changed at once, every source (fresh counters) every [`STATE_REFRESH`]. Counters move
/// with every frame; writing them that often would only wear the SD card.
struct StatePublisher {
    published: HashMap<String, (String, Option<String>)>,
    last_full: Option<Instant>,
}

const STATE_REFRESH: Duration = Duration::from_secs(5);

impl StatePublisher {
    fn new() -> StatePublisher {
        StatePublisher {
            published: HashMap::new(),
            last_full: None,
        }
    }

    fn publish(&mut self, board: &StatusBoard, writer: &StoreWriter, force: bool) {
        let full = force || self.last_full.is_none_or(|t| t.elapsed() >= STATE_REFRESH);
        if full {
            self.last_full = Some(Instant::now());
        }
        let now = now_unix();
        for s in board.snapshot() {
            let key = (s.state.label().to_string(), s.reason.clone());
            if !full && self.published.get(&s.name) == Some(&key) {
                continue;
            }
            self.published.insert(s.name.clone(), key);
            publish_state(&s, writer, now);
        }
    }
}

/// Commit what is queued and report write errors now rather than at exit. An error comes
/// back only when the writer cannot go on (its thread is gone, the disk is unwritable);
/// a rejected record is logged and skipped.
fn check_writer(writer: &StoreWriter) -> Result<(), StoreError> {
    match writer.flush() {
        Ok(()) => Ok(()),
        Err(e) if e.disposition() == crate::Disposition::Skip => {
            tracing::error!("a database write was rejected: {e}");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn publish_state(s: &SourceStatus, writer: &StoreWriter, now: f64) {
    let record = SourceStateRecord {
        name: s.name.clone(),
        uri: s.uri.clone(),
        state: s.state.label().to_string(),
        reason: s.reason.clone(),
        last_frame_time: s.last_frame_time,
        frames: s.frames,
        frames_dropped: s.frames_dropped,
        reconnects: s.reconnects,
        updated_at: now,
    };
    if let Err(e) = writer.put_source_state(record) {
        tracing::warn!(source = %s.name, "cannot record the source state: {e}");
    }
}

/// One sampled frame's embedding, for `cliptag embed`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrameEmbedding {
    pub source: String,
    pub pts: f64,
    pub embedding: Vec<f32>,
}

/// Embed every sampled frame of a video or image, calling `emit` in time order.
pub fn embed_media(
    model: &ClipModel,
    location: &str,
    sampling: Sampling,
    mut emit: impl FnMut(FrameEmbedding),
) -> Result<u64, RunError> {
    let mut source = GstSource::open(location, location, sampling)?;
    let mut batch: Vec<crate::ingest::Frame> = Vec::new();
    let mut count = 0;
    let mut flush = |batch: &mut Vec<crate::ingest::Frame>| -> Result<(), RunError> {
        if batch.is_empty() {
            return Ok(());
        }
        let images: Vec<_> = batch.iter().map(|f| &f.image).collect();
        let embeddings = model.embed_frames(&images)?;
        for (f, e) in batch.drain(..).zip(embeddings) {
            emit(FrameEmbedding {
                source: location.to_string(),
                pts: f.pts,
                embedding: e,
            });
        }
        Ok(())
    };
    while let Some(frame) = source.next_frame()? {
        count += 1;
        batch.push(frame);
        if batch.len() == crate::clip::MAX_BATCH {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    for w in source.warnings() {
        tracing::warn!(source = location, "{w}");
    }
    Ok(count)
}
