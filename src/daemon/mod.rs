//! Daemon: wire the stages together and keep them running.
//!
//! Rules:
//! - One thread per source pulls frames (never a GStreamer streaming thread doing our work),
//!   windows them, picks keyframes and preprocesses them.
//! - Inference runs on one thread behind a bounded channel, so a slow CLIP stage slows the
//!   sources down instead of queueing frames without bound.
//! - All writes go through the store's single writer thread.
//! - A source that fails is reported and skipped; the others carry on. A run fails only
//!   when nothing at all could be processed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::classify::{
    expand_labels, load_labels, super_image, Aggregation, Aggregator, LabelError, LabelSet,
};
use crate::clip::{preprocess, ClipError, ClipModel, ImageEmbedder, PreprocessConfig};
use crate::config::{mask_uri, Config, KeyframeConfig, Selection, SourceConfig};
use crate::ingest::{FrameSource, GstSource, IngestError, Sampling};
use crate::keyframes::{
    scene_unchanged, AllFrames, ClusterSelector, KeyframeSelector, Window, Windower,
};
use crate::store::{
    LabelRecord, ModelRecord, NewMatch, NewSegment, Store, StoreError, StoreWriter,
};

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
}

impl RunError {
    pub fn disposition(&self) -> crate::Disposition {
        match self {
            RunError::Clip(e) => e.disposition(),
            RunError::Labels(e) => e.disposition(),
            RunError::Store(e) => e.disposition(),
            RunError::Ingest(e) => e.disposition(),
            RunError::ModelChanged { .. } | RunError::NothingProcessed => crate::Disposition::Stop,
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
    pub windows: u64,
    pub frames: u64,
    pub media_seconds: f64,
    pub error: Option<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub model_id: String,
    pub labels: usize,
    pub prompts_encoded: usize,
    pub sources: Vec<SourceReport>,
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
    templates: &[String],
) -> Result<(LabelSet, usize), RunError> {
    let labels = expand_labels(&load_labels(labels_path)?, templates);
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
        let encoded = model.embed_texts(&missing)?;
        let fresh: Vec<(String, Vec<f32>)> = missing
            .iter()
            .cloned()
            .zip(encoded.into_iter().map(|(_, e)| e))
            .collect();
        writer.put_text_embeddings(&model.id, fresh.clone())?;
        cache.extend(fresh);
    }
    let set = LabelSet::build(labels, |p| {
        cache.get(p).cloned().ok_or_else(|| ClipError::Tokenize {
            text: p.to_string(),
            reason: "prompt embedding missing".into(),
        })
    })?;
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

/// A window ready for CLIP: keyframes already preprocessed (one tensor per keyframe, or a
/// single super image in grid mode).
#[derive(Debug, Clone)]
pub struct WindowJob {
    pub source: String,
    pub source_uri: String,
    pub window_start: f64,
    pub window_end: f64,
    pub sampled: usize,
    pub keyframes_ms: Vec<i64>,
    /// Cheap features of the keyframes, for the unchanged-scene check.
    pub features: Vec<Vec<f32>>,
    pub pixels: Vec<Vec<f32>>,
}

/// Preprocess a window's keyframes for the configured aggregation.
pub fn job_from_window(
    source: &str,
    source_uri: &str,
    window: Window,
    recipe: &PreprocessConfig,
    aggregation: Aggregation,
) -> WindowJob {
    let pixels = match aggregation {
        Aggregation::Grid => {
            let images: Vec<_> = window.keyframes.iter().map(|f| &f.image).collect();
            vec![preprocess(&super_image(&images, recipe.crop.0), recipe)]
        }
        Aggregation::Mean | Aggregation::Max => window
            .keyframes
            .iter()
            .map(|f| preprocess(&f.image, recipe))
            .collect(),
    };
    WindowJob {
        source: source.to_string(),
        source_uri: mask_uri(source_uri),
        window_start: window.start,
        window_end: window.end,
        sampled: window.sampled,
        keyframes_ms: window
            .keyframes
            .iter()
            .map(|f| (f.pts * 1000.0).round() as i64)
            .collect(),
        features: window.features,
        pixels,
    }
}

/// The keyframe selector the config asks for.
pub fn selector_for(config: &KeyframeConfig) -> Box<dyn KeyframeSelector> {
    match config.select {
        Selection::All => Box::new(AllFrames),
        Selection::Cluster => Box::new(ClusterSelector {
            duplicate_distance: config.scene_threshold,
            ..ClusterSelector::new(config.k)
        }),
    }
}

/// Pull one source to its end, sending windows to inference.
#[allow(clippy::too_many_arguments)]
fn ingest_source(
    source: &SourceConfig,
    sampling: Sampling,
    window: std::time::Duration,
    keyframes: &KeyframeConfig,
    recipe: &PreprocessConfig,
    jobs: &Sender<WindowJob>,
    progress: &dyn Progress,
    cancel: &AtomicBool,
) -> SourceReport {
    let mut report = SourceReport {
        name: source.name.clone(),
        ..Default::default()
    };
    let mut frames = match GstSource::open(&source.name, &source.uri, sampling) {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    progress.source_started(&source.name, frames.duration());
    let mut windower = Windower::new(window, selector_for(keyframes));
    let send = |w: Window, report: &mut SourceReport| -> bool {
        report.windows += 1;
        report.media_seconds = w.end;
        jobs.send(job_from_window(
            &source.name,
            &source.uri,
            w,
            recipe,
            keyframes.aggregate,
        ))
        .is_ok()
    };
    loop {
        if cancel.load(Ordering::SeqCst) {
            report.error = Some("cancelled".into());
            break;
        }
        match frames.next_frame() {
            Ok(Some(frame)) => {
                report.frames += 1;
                if let Some(w) = windower.push(frame) {
                    if !send(w, &mut report) {
                        break;
                    }
                }
            }
            Ok(None) => {
                if let Some(w) = windower.finish(frames.duration()) {
                    send(w, &mut report);
                }
                if report.frames == 0 {
                    report.error = Some(format!(
                        "source {:?}: the stream ended without a single video frame",
                        source.name
                    ));
                }
                break;
            }
            Err(e) => {
                // Windows already complete are kept; the partial one is dropped with the error.
                report.error = Some(e.to_string());
                break;
            }
        }
    }
    report.warnings = frames.warnings();
    report
}

/// The last window of a source whose embedding was computed, for the unchanged-scene skip.
struct Reference {
    features: Vec<Vec<f32>>,
    frame_embeddings: Vec<Vec<f32>>,
    embedding: Vec<f32>,
}

/// CLIP + classification for one window; the result is what the store keeps.
pub struct Tagger<E: ImageEmbedder> {
    pub embedder: E,
    pub model_id: String,
    pub labels: LabelSet,
    pub keyframes: KeyframeConfig,
    pub top_k: usize,
    pub min_probability: f32,
    previous: HashMap<String, Reference>,
}

impl<E: ImageEmbedder> Tagger<E> {
    pub fn new(
        embedder: E,
        model_id: String,
        labels: LabelSet,
        keyframes: KeyframeConfig,
        classify: &crate::config::ClassifyConfig,
    ) -> Self {
        Tagger {
            embedder,
            model_id,
            labels,
            keyframes,
            top_k: classify.top_k,
            min_probability: classify.min_probability,
            previous: HashMap::new(),
        }
    }

    pub fn tag(&mut self, job: WindowJob) -> Result<NewSegment, ClipError> {
        let unchanged = self.keyframes.skip_unchanged
            && self.previous.get(&job.source).is_some_and(|r| {
                scene_unchanged(&r.features, &job.features, self.keyframes.scene_threshold)
            });
        let clip_calls;
        if unchanged {
            // The reference stays the window that was embedded, so slow drift still
            // triggers a fresh embedding once it adds up past the threshold.
            clip_calls = 0;
        } else {
            let frame_embeddings = self.embedder.embed_pixels(&job.pixels)?;
            clip_calls = frame_embeddings.len() as u32;
            let embedding = self
                .keyframes
                .aggregate
                .aggregate(&frame_embeddings)
                .unwrap_or_default();
            self.previous.insert(
                job.source.clone(),
                Reference {
                    features: job.features.clone(),
                    frame_embeddings,
                    embedding,
                },
            );
        }
        let reference = self
            .previous
            .get(&job.source)
            .ok_or_else(|| ClipError::Inference {
                path: job.source.clone().into(),
                reason: "no embedding for the window".into(),
            })?;
        let scores = match self.keyframes.aggregate {
            Aggregation::Max => self.labels.score_max(&reference.frame_embeddings),
            Aggregation::Mean | Aggregation::Grid => self.labels.score(&reference.embedding),
        };
        let matches = scores
            .into_iter()
            .take(self.top_k)
            .filter(|s| s.probability >= self.min_probability)
            .map(|s| NewMatch {
                label: s.label,
                rank: s.rank,
                cosine: s.cosine,
                probability: s.probability,
            })
            .collect();
        Ok(NewSegment {
            source: job.source,
            source_uri: job.source_uri,
            model_id: self.model_id.clone(),
            start_ms: (job.window_start * 1000.0).round() as i64,
            end_ms: (job.window_end * 1000.0).round() as i64,
            wall_time: now_unix(),
            frame_count: job.sampled as u32,
            keyframes_ms: job.keyframes_ms,
            clip_calls,
            embedding: reference.embedding.clone(),
            matches,
        })
    }
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

/// Tag every configured source to its end (files), then return what happened.
pub fn run_sources(
    config: &Config,
    options: &RunOptions,
    progress: Arc<dyn Progress>,
) -> Result<RunReport, RunError> {
    crate::ingest::init()?;
    let model = ClipModel::load_with(
        &config.model.dir,
        config.model.variant,
        config.model.layout,
        config.model.threads,
    )?;
    tracing::info!(model = %model.id, dim = model.embedding_dim, load_ms = model.load_time.as_millis() as u64, "model loaded");
    let store = Store::open(&config.database)?;
    check_model_generation(&store, &model.id, options)?;
    let writer = StoreWriter::spawn(&config.database)?;
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
        &config.classify.prompt_templates,
    )?;
    tracing::info!(
        labels = labels.labels.len(),
        prompts_encoded,
        "labels ready"
    );

    let model_id = model.id.clone();
    let recipe = model.preprocess.clone();
    let mut tagger = Tagger::new(
        model,
        model_id,
        labels,
        config.keyframes.clone(),
        &config.classify,
    );
    let mut report = RunReport {
        model_id: tagger.model_id.clone(),
        labels: tagger.labels.labels.len(),
        prompts_encoded,
        sources: Vec::new(),
    };

    let (tx, rx): (Sender<WindowJob>, Receiver<WindowJob>) = bounded(4);
    let cancel = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for source in config.sources.clone() {
        let tx = tx.clone();
        let recipe = recipe.clone();
        let progress = progress.clone();
        let cancel = cancel.clone();
        let (sampling, window, keyframes) =
            (config.sampling, config.window, config.keyframes.clone());
        let handle = std::thread::Builder::new()
            .name(format!("source-{}", source.name))
            .spawn(move || {
                let r = ingest_source(
                    &source,
                    sampling,
                    window,
                    &keyframes,
                    &recipe,
                    &tx,
                    progress.as_ref(),
                    &cancel,
                );
                progress.source_finished(&r);
                r
            })
            .map_err(|e| {
                RunError::Ingest(IngestError::Init(format!(
                    "cannot start a source thread: {e}"
                )))
            })?;
        handles.push(handle);
    }
    drop(tx);

    let mut fatal: Option<RunError> = None;
    let mut written: HashMap<String, u64> = HashMap::new();
    for job in rx.iter() {
        let source = job.source.clone();
        let end = job.window_end;
        match tagger.tag(job) {
            Ok(segment) => {
                if let Err(e) = writer.write_segment(segment) {
                    fatal = Some(e.into());
                    break;
                }
                *written.entry(source.clone()).or_default() += 1;
                progress.window_done(&source, end);
            }
            Err(e) => {
                fatal = Some(e.into());
                break;
            }
        }
    }
    if fatal.is_some() {
        cancel.store(true, Ordering::SeqCst);
        // Unblock senders waiting on the full channel so their threads can exit.
        for _ in rx.try_iter() {}
    }
    drop(rx);
    for h in handles {
        if let Ok(mut r) = h.join() {
            // A window cut short by a fatal error downstream was not written.
            r.windows = written.get(&r.name).copied().unwrap_or(0);
            report.sources.push(r);
        }
    }
    writer.close()?;
    if let Some(e) = fatal {
        return Err(e);
    }
    Ok(report)
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
