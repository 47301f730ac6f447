//! The inference thread: windows from every source in, batched into CLIP calls, segments
//! out to the writer; label reloads on request, between batches.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use super::backfill::backfill;
use super::error::RunError;
use super::labels::prepare_labels;
use super::status::StageBeat;
use super::tagger::{Tagger, WindowJob};
use crate::classify::ClassifyConfig;
use crate::clip::{ClipModel, MAX_BATCH};
use crate::ingest::FileIdentity;
use crate::store::{Store, StoreWriter, TaggedFile};

/// What the inference thread reports when it ends.
#[derive(Debug, Default)]
pub(super) struct InferenceOutcome {
    /// Segments written, per source.
    pub written: HashMap<String, u64>,
    /// Windows CLIP failed on (logged; the source carried on).
    pub failed_windows: u64,
    /// Windows still queued when the shutdown deadline passed.
    pub abandoned: u64,
    /// What stopped the thread early, if anything did.
    pub fatal: Option<RunError>,
    /// Labels in force when the thread ended (after any reload).
    pub labels: usize,
}

pub(super) enum WorkerControl {
    Reload { classify: ClassifyConfig },
}

/// The inference thread: windows in, segments to the writer; label reloads on request.
pub(super) struct InferenceWorker {
    pub tagger: Tagger<ClipModel>,
    pub store: Store,
    pub writer: Arc<StoreWriter>,
    pub labels_path: PathBuf,
    pub beat: Arc<StageBeat>,
    /// Set when the shutdown deadline passed: drop what is queued and end.
    pub abort: Arc<AtomicBool>,
    /// The `[classify]` settings in force (a reload may change them).
    pub classify: ClassifyConfig,
    /// The backfill under way, if any: its stop flag and thread.
    pub backfill: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

impl InferenceWorker {
    pub(super) fn run(
        mut self,
        jobs: Receiver<WindowJob>,
        control: Receiver<WorkerControl>,
    ) -> InferenceOutcome {
        let mut outcome = InferenceOutcome::default();
        let mut control = Some(control);
        // Labels edited while the daemon was stopped: the past is rescored now.
        self.start_backfill();
        let never = crossbeam_channel::never();
        loop {
            self.beat.beat();
            if self.abort.load(Ordering::SeqCst) {
                outcome.abandoned += jobs.try_iter().count() as u64;
                break;
            }
            // A writer paused on a full disk could not store what CLIP would make now:
            // take no window (files wait at the queue, live sources drop and count) and
            // no reload, until it commits again.
            if self.writer.paused().is_some() {
                std::thread::sleep(Duration::from_millis(200));
                continue;
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
                        let mut images: usize = batch[0].images();
                        while images < MAX_BATCH {
                            match jobs.try_recv() {
                                Ok(job) => {
                                    images += job.images();
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
        self.stop_backfill();
        outcome.labels = self.tagger.labels().labels.len();
        outcome
    }

    /// Rescores, on a thread of its own, the stored windows the label set in force did not
    /// score (see `backfill.rs`); a backfill of an older label set is stopped first.
    fn start_backfill(&mut self) {
        self.stop_backfill();
        let store = match Store::open_existing(self.writer.path()) {
            Ok(store) => store,
            Err(e) => {
                tracing::error!("backfill not started: {e}");
                return;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (writer, labels, classify, model_id, flag) = (
            self.writer.clone(),
            self.tagger.labels().clone(),
            self.classify.clone(),
            self.tagger.model_id.clone(),
            stop.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("cliptag-backfill".into())
            .spawn(move || {
                if let Err(e) = backfill(&store, &writer, &model_id, &labels, &classify, &flag) {
                    tracing::error!("backfill stopped: {e}");
                }
            });
        match spawned {
            Ok(handle) => self.backfill = Some((stop, handle)),
            Err(e) => tracing::error!("backfill not started: {e}"),
        }
    }

    fn stop_backfill(&mut self) {
        if let Some((stop, handle)) = self.backfill.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
    }

    fn tag_and_write(
        &mut self,
        batch: Vec<WindowJob>,
        outcome: &mut InferenceOutcome,
    ) -> Result<(), RunError> {
        let count = batch.len() as u64;
        let done: Vec<(String, String, FileIdentity)> = batch
            .iter()
            .filter_map(|j| {
                j.file_done
                    .map(|f| (j.source.clone(), j.source_uri.clone(), f))
            })
            .collect();
        // Told after the batch's segments are queued to the writer (or given up), whatever
        // happens below: the senders are dropped with this vector.
        let handed_over: Vec<_> = batch.iter().filter_map(|j| j.handed_over.clone()).collect();
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
            tracing::debug!(
                source = %source,
                start_ms = segment.start_ms,
                end_ms = segment.end_ms,
                clip_calls = segment.clip_calls,
                top = segment.matches.first().map_or("-", |m| m.label.as_str()),
                probability = segment.matches.first().map_or(0.0, |m| m.probability),
                "window tagged"
            );
            self.writer.write_segment(segment)?;
            *outcome.written.entry(source).or_default() += 1;
        }
        if !done.is_empty() {
            let tagged_with = format!("{}:{}", self.tagger.model_id, self.tagger.label_set());
            for (source, uri, file) in done {
                tracing::info!(source = %source, "tagged to its end");
                self.writer.mark_file_tagged(TaggedFile {
                    source,
                    uri,
                    size: file.size,
                    mtime: file.mtime,
                    tagged_with: tagged_with.clone(),
                })?;
            }
        }
        for waiting in handed_over {
            // The source may have stopped waiting; nothing to tell then.
            let _ = waiting.try_send(());
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
                self.tagger.set_labels(labels);
                self.classify = classify.clone();
                self.start_backfill();
            }
            Err(e) => tracing::error!(
                "labels not reloaded, the previous {} labels stay in force: {e}",
                self.tagger.labels().labels.len()
            ),
        }
    }
}
