//! The SQLite store: what CLIP saw, in which window of which source, under
//! which model and label set; and the caches that make a restart cheap.
//!
//! Rules, and why:
//!
//! - **One writer thread.** [`StoreWriter`] owns the only connection that
//!   writes. Pipeline stages send it ops over a bounded channel, so nothing
//!   upstream ever waits on a disk write or fights over the SQLite write
//!   lock, and a full channel is natural backpressure.
//! - **Batched transactions.** The writer groups whatever is queued (up to
//!   [`MAX_BATCH_OPS`] ops or [`MAX_BATCH_WAIT`]) into one
//!   transaction; a commit per segment would wear SD cards and cap
//!   throughput at the fsync rate. Each op runs in its own savepoint, so one
//!   bad op is rolled back and reported without losing its neighbours.
//! - **WAL, `synchronous=NORMAL`.** Readers (`cliptag query`, the daemon's own
//!   [`Store`]) never block the writer nor it them; NORMAL in WAL mode can
//!   lose the last commits on power loss but never corrupts the file.
//! - **Foreign keys on**, on every connection (SQLite defaults them off).
//! - **Migrations by `PRAGMA user_version`** = number of applied migrations
//!   from `migrations/*.sql`, each applied in its own transaction. A file
//!   newer than this binary is refused untouched rather than half-understood.
//! - **Embeddings are little-endian `f32` BLOBs** ([`f32s_to_blob`]): compact,
//!   and identical whatever the box's CPU.
//! - **`auto_vacuum = INCREMENTAL`**, so retention can hand disk space back
//!   instead of only freeing pages inside the file. New databases get it
//!   before their first table; older ones are converted by one VACUUM when
//!   the daemon first opens them (see `schema.rs`).
//! - **Retention runs on the writer thread** ([`Retention`], rules in
//!   `retention.rs`): it deletes only segments, oldest first, and never
//!   contends with the writer for the lock because it is the writer.
//! - **Source states are upserted, not logged**: one row per source, the
//!   latest word on it, so status is one small read from any process.

mod ops;
mod read;
mod retention;
mod schema;
mod writer;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::Disposition;

pub use read::Store;
pub use retention::{Retention, RetentionReport, RetentionSection};
pub use schema::SCHEMA_VERSION;
pub use writer::{StoreWriter, WriterOptions, WriterStats, MAX_BATCH_OPS, MAX_BATCH_WAIT};

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

/// The latest state of one source, as sent to [`StoreWriter::put_source_state`]
/// and read back by [`Store::source_states`].
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

/// One classified window of a source, as sent to [`StoreWriter::write_segment`].
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

/// Filters for [`Store::query`]; `None`/`false` means "don't filter".
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

/// One match of one segment; [`Store::query`] orders them by source, start, rank.
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

#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    #[error("database {}: cannot create directory {}: {source}", path.display(), dir.display())]
    CreateDir {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("database {}: cannot open: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database {} has schema version {found}, but this cliptag knows only up to \
         version {known}; use a newer cliptag (the file was not modified)",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },
    #[error("database {}: migration {version} failed: {source}", path.display())]
    Migration {
        path: PathBuf,
        version: u32,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {}: {context}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {}: model {model_id:?} is not registered", path.display())]
    UnknownModel { path: PathBuf, model_id: String },
    #[error(
        "database {}: segment {source_name}@{start_ms}ms: model {model_id} has no label {label:?}",
        path.display()
    )]
    UnknownLabel {
        path: PathBuf,
        model_id: String,
        label: String,
        source_name: String,
        start_ms: i64,
    },
    #[error("database {}: bad data: {detail}", path.display())]
    BadData { path: PathBuf, detail: String },
    /// From [`blob_to_f32s`], which does not know which database the bytes came from;
    /// the store's own readers report [`StoreError::BadData`] instead.
    #[error("embedding blob of {len} bytes is not a whole number of f32s")]
    BadBlob { len: usize },
    #[error("database {}: cannot start the writer thread: {source}", path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {}: the writer thread is gone", path.display())]
    WriterGone { path: PathBuf },
}

impl StoreError {
    pub fn disposition(&self) -> Disposition {
        match self {
            StoreError::CreateDir { .. }
            | StoreError::NotFound { .. }
            | StoreError::TooNew { .. }
            | StoreError::Spawn { .. }
            | StoreError::WriterGone { .. } => Disposition::Stop,
            StoreError::UnknownModel { .. }
            | StoreError::UnknownLabel { .. }
            | StoreError::BadData { .. }
            | StoreError::BadBlob { .. } => Disposition::Skip,
            // Whatever opening or migrating hit, the store is unusable unless
            // it was only another process holding the lock.
            StoreError::Open { source, .. } | StoreError::Migration { source, .. } => {
                match sqlite_disposition(source) {
                    Disposition::Retry => Disposition::Retry,
                    _ => Disposition::Stop,
                }
            }
            StoreError::Sqlite { source, .. } => sqlite_disposition(source),
        }
    }

    pub(crate) fn sqlite(path: &Path, context: impl Into<String>, source: rusqlite::Error) -> Self {
        StoreError::Sqlite {
            path: path.to_path_buf(),
            context: context.into(),
            source,
        }
    }

    pub(crate) fn bad_data(path: &Path, detail: impl Into<String>) -> Self {
        StoreError::BadData {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    pub(crate) fn is_busy(&self) -> bool {
        matches!(self.disposition(), Disposition::Retry)
    }
}

fn sqlite_disposition(e: &rusqlite::Error) -> Disposition {
    use rusqlite::ErrorCode as C;
    match e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::DatabaseBusy | C::DatabaseLocked => Disposition::Retry,
            C::ConstraintViolation | C::TypeMismatch | C::TooBig => Disposition::Skip,
            // Corrupt, unreadable, full, read-only, or our own SQL is wrong:
            // retrying the same thing cannot help.
            _ => Disposition::Stop,
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::ToSqlConversionFailure(..) => Disposition::Skip,
        _ => Disposition::Stop,
    }
}

/// Encodes an embedding as little-endian `f32`s, the BLOB format of every
/// embedding column.
pub fn f32s_to_blob(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * 4);
    for x in v {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// Decodes [`f32s_to_blob`]'s format; a length that is not a multiple of 4
/// means the row is damaged, not that the tail can be ignored.
pub fn blob_to_f32s(b: &[u8]) -> Result<Vec<f32>, StoreError> {
    if !b.len().is_multiple_of(4) {
        return Err(StoreError::BadBlob { len: b.len() });
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}
