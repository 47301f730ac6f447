//! Backfill: the stored windows of the running model rescored against the label set in
//! force, from their stored embeddings — no video decoded, so it works after the video is
//! gone. A label added today finds its matches in last month's windows.
//!
//! Rules, and why:
//! - **Each window says which label set scored it** (table `scored_by`: the label set's
//!   fingerprint), set in the same op as its new matches: a window's matches always come
//!   from one label set, and `query` never mixes two for one window.
//! - **Chunks of [`CHUNK`] windows, one writer op each**, queued between the live windows'
//!   batches: live tagging waits for at most one chunk, never for the whole backfill.
//! - **Resumable, and each window once**: the next chunk is "windows not scored by this
//!   label set", so a backfill killed half-way goes on where it stopped when the daemon
//!   starts (a start with a changed labels file backfills too), and a window already moved
//!   is not read again.
//! - **Scored the way they were tagged**: a window tagged under `aggregate = "max"` keeps
//!   its keyframes' embeddings and each label gets its best keyframe, as the tagger gave
//!   it; any other window is scored from the embedding it stores.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::config::Config;
use super::error::RunError;
use super::labels::prepare_labels;
use super::tagger::stored_matches;
use crate::classify::{ClassifyConfig, LabelSet};
use crate::store::{Rescored, Store, StoreError, StoreWriter};

/// Windows per writer op.
pub const CHUNK: usize = 2000;

/// What a backfill did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackfillReport {
    pub windows: u64,
    pub seconds: f64,
}

/// Rescores every window of `model_id` not yet scored by `labels`, until done or `stop`.
/// Returns when the last chunk is queued; `writer.flush()` to wait for it to commit.
pub fn backfill(
    store: &Store,
    writer: &StoreWriter,
    model_id: &str,
    labels: &LabelSet,
    classify: &ClassifyConfig,
    stop: &AtomicBool,
) -> Result<BackfillReport, StoreError> {
    let started = Instant::now();
    let label_set = labels.fingerprint();
    let due = store.windows_not_scored_by(model_id, &label_set)?;
    if due == 0 {
        return Ok(BackfillReport::default());
    }
    tracing::info!(
        windows = due,
        labels = labels.labels.len(),
        "backfill: rescoring stored windows with the label set in force"
    );
    let mut after = 0;
    let mut done = 0u64;
    while !stop.load(Ordering::SeqCst) {
        // A writer paused on a full disk could not take the chunk; its queue is for the
        // live windows that come first when it resumes.
        if writer.paused().is_some() {
            std::thread::sleep(std::time::Duration::from_millis(500));
            continue;
        }
        let chunk = store.windows_to_rescore(model_id, &label_set, after, CHUNK)?;
        let (Some(&(first, _)), Some(&(last, _))) = (chunk.first(), chunk.last()) else {
            break;
        };
        let mut keyframes = store.keyframe_embeddings_between(first, last)?;
        after = last;
        done += chunk.len() as u64;
        let windows = chunk
            .into_iter()
            .map(|(segment_id, embedding)| {
                // Scored the way it was tagged: per keyframe where they were kept (max).
                let scores = match keyframes.remove(&segment_id) {
                    Some(frames) => labels.score_max(&frames),
                    None => labels.score(&embedding),
                };
                Rescored {
                    segment_id,
                    matches: stored_matches(scores, classify.top_k, classify.min_probability),
                }
            })
            .collect();
        writer.rescore(model_id, &label_set, windows)?;
    }
    let report = BackfillReport {
        windows: done,
        seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(
        windows = report.windows,
        seconds = report.seconds,
        per_second = (report.windows as f64 / report.seconds.max(1e-9)).round(),
        stopped = stop.load(Ordering::SeqCst),
        "backfill: done"
    );
    Ok(report)
}

/// `cliptag labels backfill`: the config's labels file as it is now, its prompts embedded
/// (the text tower loads only for prompts the database has not cached), made the model's
/// label set, and every stored window of the model rescored with it. For a stopped daemon;
/// a running one does the same on SIGHUP.
pub fn backfill_stored(config: &Config) -> Result<BackfillReport, RunError> {
    use crate::clip::{ClipModel, TextTower};
    let model = ClipModel::load_with(&config.model, TextTower::WhenNeeded)?;
    let store = Store::open_existing(&config.database)?;
    let writer = StoreWriter::spawn(&config.database)?;
    let (labels, _) = prepare_labels(
        &model,
        &store,
        &writer,
        &config.labels_path,
        &config.classify,
    )?;
    let report = backfill(
        &store,
        &writer,
        &model.id,
        &labels,
        &config.classify,
        &AtomicBool::new(false),
    )?;
    writer.close()?;
    Ok(report)
}
