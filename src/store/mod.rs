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
//! - **A full disk pauses, it does not stop** (`space.rs`, the writer): the batch
//!   in hand is held and retried as room comes back (from `min_free_mb` retention,
//!   its reserve file, or the user), producers wait behind the bounded channel, and
//!   [`StoreWriter::paused`] says so for status lines. Nothing committed is touched.
//! - **Source states are upserted, not logged**: one row per source, the
//!   latest word on it, so status is one small read from any process.

mod blob;
pub mod codes;
mod error;
mod filter;
mod indexer;
pub mod nearest;
mod ops;
mod read;
mod records;
mod retention;
mod scan;
mod schema;
pub mod space;
mod writer;

pub use blob::{blob_to_f32s, f32s_to_blob};
pub use error::StoreError;
pub use records::{
    EmbeddingKind, LabelRecord, LabelRow, MatchQuery, MatchRow, ModelRecord, NewMatch, NewSegment,
    Rescored, SegmentRow, SourceStateRecord, TaggedFile, WindowFilter, SOURCE_STATES,
};

pub use read::Store;
pub use retention::{Retention, RetentionReport, RetentionSection};
pub use schema::SCHEMA_VERSION;
pub use writer::{
    StoreWriter, WriterOptions, WriterPause, WriterStats, MAX_BATCH_OPS, MAX_BATCH_WAIT,
};
