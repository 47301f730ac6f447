//! Tagging: turn windows into segments — CLIP on the keyframes, then the label scores.
//!
//! Rules:
//! - Runs on the inference thread only; sources hand it [`WindowJob`]s whose fate was
//!   decided before any pixel was preprocessed: either preprocessed keyframes, or word
//!   that the scene did not change (the source compared its cheap features).
//! - Windows that arrive together, from any sources, share one batched CLIP call.
//! - An unchanged window reuses the embedding of its source's last embedded window
//!   (`clip_calls = 0`).

use std::collections::HashMap;

use crate::classify::{Aggregator, ClassifyConfig, LabelSet};
use crate::clip::{ClipError, ImageEmbedder};
use crate::ingest::{FileIdentity, RecordedFrom, SourceKind};
use crate::keyframes::{Aggregation, KeyframeConfig, Window};
use crate::store::{EmbeddingKind, NewMatch, NewSegment};

/// What CLIP is to see of a window.
#[derive(Debug, Clone)]
pub enum WindowContent {
    /// Preprocessed keyframes (one tensor each), or one super image in grid mode.
    Pixels(Vec<Vec<f32>>),
    /// The scene did not change since the source's last window with pixels: reuse its
    /// embedding.
    Unchanged,
}

/// A window on its way to inference.
#[derive(Debug, Clone)]
pub struct WindowJob {
    pub source: String,
    /// Credentials masked.
    pub source_uri: String,
    pub source_kind: SourceKind,
    /// A file's recording start and how it is known.
    pub recorded_at: Option<(f64, RecordedFrom)>,
    /// A file: the window's position in it. A live source: capture time (unix seconds).
    pub window_start: f64,
    pub window_end: f64,
    /// The window's wall-clock span, unix seconds.
    pub wall_start: f64,
    pub wall_end: f64,
    /// Unix seconds from the run's clock when the source cut the window.
    pub processed_at: f64,
    pub sampled: usize,
    pub keyframes_ms: Vec<i64>,
    pub content: WindowContent,
    /// Set on the last window of a file that was read to its end: what the file was, so
    /// the file can be marked tagged once this window is written.
    pub file_done: Option<FileIdentity>,
    /// Told when the window has been handed to the writer (or given up): a file's source
    /// waits for its last window so that "finished" means stored. Windows are tagged in
    /// the order they were sent, so the last one's word covers the ones before it.
    pub handed_over: Option<crossbeam_channel::Sender<()>>,
}

impl WindowJob {
    /// The job for `window` of a source that `stamp` describes, whose content the source
    /// decided.
    pub fn new(stamp: &WindowStamp<'_>, window: &Window, content: WindowContent) -> WindowJob {
        // A live window's media times are its capture times already; a file's are
        // positions, on the recording's clock.
        let origin = match stamp.kind {
            SourceKind::Live => 0.0,
            SourceKind::File => stamp.recorded_at.map_or(stamp.started_at, |(t, _)| t),
        };
        WindowJob {
            source: stamp.source.to_string(),
            source_uri: stamp.shown_uri.to_string(),
            source_kind: stamp.kind,
            recorded_at: stamp.recorded_at,
            window_start: window.start,
            window_end: window.end,
            wall_start: origin + window.start,
            wall_end: origin + window.end,
            processed_at: stamp.processed_at,
            sampled: window.sampled,
            keyframes_ms: window
                .keyframes
                .iter()
                .map(|f| (f.pts * 1000.0).round() as i64)
                .collect(),
            content,
            file_done: None,
            handed_over: None,
        }
    }

    /// Images CLIP runs for this window.
    pub fn images(&self) -> usize {
        match &self.content {
            WindowContent::Pixels(p) => p.len(),
            WindowContent::Unchanged => 0,
        }
    }
}

/// What the source thread knows about where its windows stand in time.
#[derive(Debug, Clone, Copy)]
pub struct WindowStamp<'a> {
    pub source: &'a str,
    /// Credentials masked.
    pub shown_uri: &'a str,
    pub kind: SourceKind,
    /// A file's recording start; without one a file's windows are placed at the time they
    /// were tagged.
    pub recorded_at: Option<(f64, RecordedFrom)>,
    /// Now, by the run's clock.
    pub processed_at: f64,
    /// When this reading of the source began, by the run's clock: where a file whose
    /// recording start is unknown is placed, so its windows keep their spacing.
    pub started_at: f64,
}

/// The last window of a source whose embedding was computed, for unchanged windows.
struct Reference {
    frame_embeddings: Vec<Vec<f32>>,
    embedding: Vec<f32>,
}

/// CLIP + classification for one window; the result is what the store keeps.
pub struct Tagger<E: ImageEmbedder> {
    pub embedder: E,
    pub model_id: String,
    labels: LabelSet,
    /// `labels.fingerprint()`, hashed once per label set rather than once per window.
    label_set: String,
    pub aggregate: Aggregation,
    pub top_k: usize,
    pub min_probability: f32,
    previous: HashMap<String, Reference>,
}

impl<E: ImageEmbedder> Tagger<E> {
    pub fn new(
        embedder: E,
        model_id: String,
        labels: LabelSet,
        keyframes: &KeyframeConfig,
        classify: &ClassifyConfig,
    ) -> Self {
        Tagger {
            embedder,
            model_id,
            label_set: labels.fingerprint(),
            labels,
            aggregate: keyframes.aggregate,
            top_k: classify.top_k,
            min_probability: classify.min_probability,
            previous: HashMap::new(),
        }
    }

    pub fn tag(&mut self, job: WindowJob) -> Result<NewSegment, ClipError> {
        let mut segments = self.tag_batch(vec![job])?;
        segments.pop().ok_or_else(|| ClipError::Inference {
            path: "window".into(),
            reason: "no segment for the window".into(),
        })
    }

    /// Tag windows that arrived together with one CLIP call for all their keyframes.
    /// Segments come back in the order of `jobs`.
    pub fn tag_batch(&mut self, jobs: Vec<WindowJob>) -> Result<Vec<NewSegment>, ClipError> {
        let pixels: Vec<Vec<f32>> = jobs
            .iter()
            .filter_map(|j| match &j.content {
                WindowContent::Pixels(p) => Some(p.iter().cloned()),
                WindowContent::Unchanged => None,
            })
            .flatten()
            .collect();
        let mut embeddings = if pixels.is_empty() {
            Vec::new()
        } else {
            self.embedder.embed_pixels(&pixels)?
        }
        .into_iter();

        // In arrival order: an unchanged window reuses the last embedded window of its
        // source, which may be an earlier window of this batch.
        let mut segments = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut clip_calls = 0;
            if let WindowContent::Pixels(p) = &job.content {
                let frame_embeddings: Vec<Vec<f32>> = embeddings.by_ref().take(p.len()).collect();
                clip_calls = frame_embeddings.len() as u32;
                let embedding = self
                    .aggregate
                    .aggregate(&frame_embeddings)
                    .unwrap_or_default();
                self.previous.insert(
                    job.source.clone(),
                    Reference {
                        frame_embeddings,
                        embedding,
                    },
                );
            }
            let kind = match (&job.content, self.aggregate) {
                (WindowContent::Unchanged, _) => EmbeddingKind::Reused,
                (WindowContent::Pixels(_), Aggregation::Grid) => EmbeddingKind::Grid,
                (WindowContent::Pixels(_), Aggregation::Mean | Aggregation::Max) => {
                    EmbeddingKind::Mean
                }
            };
            segments.push(self.segment_for(job, clip_calls, kind)?);
        }
        Ok(segments)
    }

    /// The label set in force.
    pub fn labels(&self) -> &LabelSet {
        &self.labels
    }

    /// Its fingerprint, as windows record it.
    pub fn label_set(&self) -> &str {
        &self.label_set
    }

    /// Scores the windows that follow with `labels` (a reload).
    pub fn set_labels(&mut self, labels: LabelSet) {
        self.label_set = labels.fingerprint();
        self.labels = labels;
    }

    /// Forget a source's reference window (it reconnected: the scene may be another).
    pub fn forget(&mut self, source: &str) {
        self.previous.remove(source);
    }

    fn segment_for(
        &self,
        job: WindowJob,
        clip_calls: u32,
        embedding_kind: EmbeddingKind,
    ) -> Result<NewSegment, ClipError> {
        let reference = self
            .previous
            .get(&job.source)
            .ok_or_else(|| ClipError::Inference {
                path: job.source.clone().into(),
                reason: "no embedding for the window".into(),
            })?;
        let scores = match self.aggregate {
            Aggregation::Max => self.labels.score_max(&reference.frame_embeddings),
            Aggregation::Mean | Aggregation::Grid => self.labels.score(&reference.embedding),
        };
        let matches = stored_matches(scores, self.top_k, self.min_probability);
        Ok(NewSegment {
            source: job.source,
            source_uri: job.source_uri,
            source_kind: job.source_kind,
            recorded_at: job.recorded_at,
            model_id: self.model_id.clone(),
            start_ms: (job.window_start * 1000.0).round() as i64,
            end_ms: (job.window_end * 1000.0).round() as i64,
            wall_start: job.wall_start,
            wall_end: job.wall_end,
            processed_at: job.processed_at,
            frame_count: job.sampled as u32,
            keyframes_ms: job.keyframes_ms,
            clip_calls,
            embedding: reference.embedding.clone(),
            embedding_kind,
            // Under max the labels were scored per keyframe; a backfill needs the same.
            keyframe_embeddings: match self.aggregate {
                Aggregation::Max => reference.frame_embeddings.clone(),
                Aggregation::Mean | Aggregation::Grid => Vec::new(),
            },
            matches,
            label_set: Some(self.label_set.clone()),
        })
    }
}

/// The scores a window keeps: the best `top_k`, none below `min_probability`. The tagger
/// and a backfill keep the same.
pub(super) fn stored_matches(
    scores: Vec<crate::classify::LabelScore>,
    top_k: usize,
    min_probability: f32,
) -> Vec<NewMatch> {
    scores
        .into_iter()
        .take(top_k)
        .filter(|s| s.probability >= min_probability)
        .map(|s| NewMatch {
            label: s.label,
            rank: s.rank,
            cosine: s.cosine,
            probability: s.probability,
        })
        .collect()
}
