//! What goes into the store and what comes back out: the records the writer takes and the
//! rows readers get.

use serde::Serialize;

use crate::ingest::{RecordedFrom, SourceKind};
use crate::times::TimeSpec;

/// The values [`SourceStateRecord::state`] may take; the writer refuses
/// others, so a typo in the daemon shows up as an error, not as a state
/// `cliptag status` has never heard of.
pub const SOURCE_STATES: [&str; 6] = [
    "connecting",
    "streaming",
    "backing off",
    "failed",
    "finished",
    "stopped",
];

/// The latest state of one source, as sent to [`super::StoreWriter::put_source_state`]
/// and read back by [`super::Store::source_states`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStateRecord {
    pub name: String,
    /// Already stripped of credentials by the caller.
    pub uri: String,
    /// One of [`SOURCE_STATES`].
    pub state: String,
    /// Why it is in this state (the error that failed it, say), if there is more to say.
    pub reason: Option<String>,
    /// Unix seconds of the last frame received; `None` before the first.
    pub last_frame_time: Option<f64>,
    pub frames: u64,
    pub frames_dropped: u64,
    /// Outages the source came back from.
    pub reconnects: u64,
    /// Connection attempts after a failure or an end (a dead camera's grow, its
    /// reconnects do not).
    pub retries: u64,
    /// Unix seconds when this record was made.
    pub updated_at: f64,
}

/// A model as registered by the writer; `id` is the content hash of its ONNX files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelRecord {
    pub id: String,
    pub path: String,
    pub embedding_dim: usize,
}

/// A label as the classifier uses it: its display text, the prompts whose
/// text embeddings were averaged into `embedding`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelRecord {
    pub text: String,
    pub prompts: Vec<String>,
    pub embedding: Vec<f32>,
}

/// One ranked label for a segment; the label is named by its text and
/// resolved against the segment's model inside the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMatch {
    pub label: String,
    /// 1 is the best match.
    pub rank: u32,
    pub cosine: f32,
    pub probability: f32,
}

/// One classified window of a source, as sent to [`super::StoreWriter::write_segment`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewSegment {
    pub source: String,
    /// Already stripped of credentials by the caller. With `source` it names the source:
    /// the same name at another location is another source.
    pub source_uri: String,
    pub source_kind: SourceKind,
    /// A file's recording start (unix seconds) and how it is known.
    pub recorded_at: Option<(f64, RecordedFrom)>,
    pub model_id: String,
    /// A file: the window's position in it, 0-based. A live source: its capture time in
    /// unix ms. Either way the key that makes a re-run replace the window.
    pub start_ms: i64,
    pub end_ms: i64,
    /// The window's wall-clock span, unix seconds: capture time (live), the recording's
    /// start plus the position (file).
    pub wall_start: f64,
    pub wall_end: f64,
    /// Unix seconds when the window was tagged.
    pub processed_at: f64,
    pub frame_count: u32,
    pub keyframes_ms: Vec<i64>,
    /// CLIP image passes spent on this window; 0 when an embedding was reused.
    pub clip_calls: u32,
    pub embedding: Vec<f32>,
    pub embedding_kind: EmbeddingKind,
    /// Each keyframe's embedding, kept where labels were scored per keyframe
    /// (`aggregate = "max"`) so a backfill can score the same way; empty otherwise.
    pub keyframe_embeddings: Vec<Vec<f32>>,
    pub matches: Vec<NewMatch>,
    /// The fingerprint of the label set that scored `matches` (`None`: not known).
    pub label_set: Option<String>,
}

/// What a window's stored embedding is of (migration 0006 says why it is recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingKind {
    /// The re-normalised mean of the window's keyframes' embeddings.
    Mean,
    /// One super image tiling the window's keyframes.
    Grid,
    /// The scene did not change: the source's last embedded window's embedding.
    Reused,
}

impl EmbeddingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmbeddingKind::Mean => "mean",
            EmbeddingKind::Grid => "grid",
            EmbeddingKind::Reused => "reused",
        }
    }

    pub fn parse(s: &str) -> Option<EmbeddingKind> {
        match s {
            "mean" => Some(EmbeddingKind::Mean),
            "grid" => Some(EmbeddingKind::Grid),
            "reused" => Some(EmbeddingKind::Reused),
            _ => None,
        }
    }

    /// A window stored before the kind was: told from what was always stored.
    pub fn of_older_window(clip_calls: u32, keyframes: usize) -> EmbeddingKind {
        match clip_calls {
            0 => EmbeddingKind::Reused,
            1 if keyframes > 1 => EmbeddingKind::Grid,
            _ => EmbeddingKind::Mean,
        }
    }
}

/// New matches for a stored window, scored by another label set from its stored embedding
/// (a backfill), as sent to [`super::StoreWriter::rescore`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rescored {
    pub segment_id: i64,
    pub matches: Vec<NewMatch>,
}

/// A file tagged to its end: what it was then, and what tagged it (`MODEL_ID:LABELS`, the
/// model id and the label set's fingerprint), so a later run over the same pile can skip it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedFile {
    pub source: String,
    /// Credentials masked, as the segments name it.
    pub uri: String,
    pub size: u64,
    pub mtime: f64,
    pub tagged_with: String,
}

/// A label as stored, for `cliptag labels` and startup checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelRow {
    pub model_id: String,
    pub text: String,
    pub prompts: Vec<String>,
    pub active: bool,
    /// Every prompt has a cached text embedding (vacuously true with no prompts).
    pub cached: bool,
    /// Length of the stored label embedding.
    pub embedding_dim: usize,
}

/// Filters for [`super::Store::query`]; empty / `None` / `false` means "don't filter".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchQuery {
    /// Exact label texts, or SQL `LIKE` patterns where they contain `%` (then `_` is a
    /// wildcard too, and ASCII case is ignored); a row matches any of them.
    pub labels: Vec<String>,
    /// Source names; a row matches any of them.
    pub sources: Vec<String>,
    /// Inclusive lower bound: windows that overlap `[since, until)`. A media bound is a
    /// position in a file and keeps file windows only; a wall bound compares the windows'
    /// wall-clock spans.
    pub since: Option<TimeSpec>,
    /// Exclusive upper bound (see `since`).
    pub until: Option<TimeSpec>,
    pub min_probability: Option<f32>,
    pub min_cosine: Option<f32>,
    /// The newest this many rows (by wall-clock start), still returned oldest first.
    pub limit: Option<usize>,
    /// Rank 1 only.
    pub top_only: bool,
}

/// Which windows a search looks at; empty / `None` means "don't filter". The bounds mean
/// what [`MatchQuery`]'s do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowFilter {
    pub sources: Vec<String>,
    pub since: Option<TimeSpec>,
    pub until: Option<TimeSpec>,
    /// Only windows with a greater id (those written after the search index's last).
    pub after_id: Option<i64>,
}

impl WindowFilter {
    /// Whether only the sources and times filter (the id bound aside).
    pub fn picks_everything(&self) -> bool {
        self.sources.is_empty() && self.since.is_none() && self.until.is_none()
    }
}

/// One match of one segment; [`super::Store::query`] orders them by wall-clock start,
/// source, rank.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchRow {
    pub segment_id: i64,
    pub source: String,
    /// The source's location, credentials masked.
    pub uri: String,
    pub kind: SourceKind,
    /// Wall-clock span, unix seconds.
    pub wall_start: f64,
    pub wall_end: f64,
    /// Position in the file, seconds: files only.
    pub offset: Option<(f64, f64)>,
    /// Unix seconds when the window was tagged.
    pub processed_at: f64,
    pub label: String,
    pub rank: u32,
    pub cosine: f32,
    pub probability: f32,
    pub model_id: String,
}

/// A stored segment with its decoded embedding, keyframes and matches (by rank).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentRow {
    pub id: i64,
    pub source: String,
    /// The source's location, credentials masked.
    pub uri: String,
    pub kind: SourceKind,
    pub model_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub wall_start: f64,
    pub wall_end: f64,
    pub processed_at: f64,
    pub frame_count: u32,
    pub keyframes_ms: Vec<i64>,
    pub clip_calls: u32,
    pub embedding: Vec<f32>,
    pub embedding_kind: EmbeddingKind,
    pub matches: Vec<MatchRow>,
}

impl SegmentRow {
    /// Position in the file, seconds: files only.
    pub fn offset(&self) -> Option<(f64, f64)> {
        (self.kind == SourceKind::File)
            .then(|| (self.start_ms as f64 / 1000.0, self.end_ms as f64 / 1000.0))
    }
}
