//! What goes into the store and what comes back out: the records the writer takes and the
//! rows readers get.

use serde::Serialize;

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
    pub reconnects: u64,
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
    /// Already stripped of credentials by the caller.
    pub source_uri: String,
    pub model_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Unix seconds when the window was captured/processed.
    pub wall_time: f64,
    pub frame_count: u32,
    pub keyframes_ms: Vec<i64>,
    /// CLIP image passes spent on this window; 0 when an embedding was reused.
    pub clip_calls: u32,
    pub embedding: Vec<f32>,
    pub matches: Vec<NewMatch>,
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

/// Filters for [`super::Store::query`]; `None`/`false` means "don't filter".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchQuery {
    /// Exact label text, or a SQL `LIKE` pattern if it contains `%`
    /// (then `_` is a wildcard too, and ASCII case is ignored).
    pub label: Option<String>,
    pub source: Option<String>,
    /// Inclusive lower bound. A media bound keeps segments that overlap
    /// `[since, until)`; a wall bound compares `wall_time`.
    pub since: Option<TimeBound>,
    /// Exclusive upper bound (see `since`).
    pub until: Option<TimeBound>,
    pub min_probability: Option<f32>,
    pub limit: Option<usize>,
    /// Rank 1 only.
    pub top_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeBound {
    /// Seconds into the source.
    Media(f64),
    /// Unix seconds.
    Wall(f64),
}

/// One match of one segment; [`super::Store::query`] orders them by source, start, rank.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchRow {
    pub segment_id: i64,
    pub source: String,
    pub start_s: f64,
    pub end_s: f64,
    pub wall_time: f64,
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
    pub model_id: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub wall_time: f64,
    pub frame_count: u32,
    pub keyframes_ms: Vec<i64>,
    pub clip_calls: u32,
    pub embedding: Vec<f32>,
    pub matches: Vec<MatchRow>,
}
