//! The single writer thread, and the retention it runs between batches.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::schema::{self, OpenMode};
use super::{
    f32s_to_blob, retention, LabelRecord, ModelRecord, NewSegment, SourceStateRecord, StoreError,
    SOURCE_STATES,
};

/// Most ops grouped into one transaction: bounds how long the write lock is
/// held and how much one failed commit can take down with it.
pub const MAX_BATCH_OPS: usize = 500;
/// Longest an op waits for company before its batch commits, i.e. the
/// worst-case delay between a segment being sent and being queryable.
pub const MAX_BATCH_WAIT: Duration = Duration::from_millis(200);
/// Two batches' worth: producers block (backpressure) only when the writer
/// is a whole batch behind.
const CHANNEL_CAPACITY: usize = 2 * MAX_BATCH_OPS;
/// A batch whose transaction hits a busy database (someone else's long
/// write, after the 5 s busy timeout) is retried this many times in all.
const BATCH_ATTEMPTS: u32 = 3;

/// What the writer did over its lifetime, returned by [`StoreWriter::close`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Segment writes committed (a rewrite of an existing window counts).
    pub segments_written: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Ops that failed, each logged and the first per flush reported.
    pub failed_ops: u64,
}

/// What retention keeps; `None` does not limit. The default keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Retention {
    /// Delete segments whose `wall_time` is older than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest segments until the pages in use fit in this many
    /// bytes (the WAL not counted; it is checkpointed away afterwards).
    pub max_db_bytes: Option<u64>,
}

impl Retention {
    fn limits_anything(&self) -> bool {
        self.max_age.is_some() || self.max_db_bytes.is_some()
    }
}

/// How [`StoreWriter::spawn_with`] sets the writer up; the default applies
/// no retention.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub retention: Retention,
    /// How often the writer thread checks retention on its own, counted from
    /// start and from each [`StoreWriter::enforce_retention`]. Ignored
    /// (no periodic check) when `retention` limits nothing or this is zero.
    pub retention_interval: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            retention: Retention::default(),
            retention_interval: Duration::from_secs(60),
        }
    }
}

/// What one retention run did. Sizes are pages in use × page size, the
/// measure `max_db_bytes` is compared with; once the run has vacuumed and
/// checkpointed, `bytes_after` is also the size of the file on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RetentionReport {
    pub segments_deleted: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

enum Op {
    RegisterModel(ModelRecord),
    PutTextEmbeddings {
        model_id: String,
        items: Vec<(String, Vec<f32>)>,
    },
    SetLabels {
        model_id: String,
        labels: Vec<LabelRecord>,
    },
    WriteSegment(Box<NewSegment>),
    PutSourceState(Box<SourceStateRecord>),
}

enum Msg {
    Op(Op),
    Barrier(Barrier),
}

/// A request that ends the batch being gathered: everything sent before it
/// is committed first, then it is answered.
enum Barrier {
    Flush(Sender<Option<StoreError>>),
    Retention {
        now: f64,
        reply: Sender<Result<RetentionReport, StoreError>>,
    },
}

/// The single writer: a thread owning the only writing connection. Ops are
/// queued and return at once; their errors surface at the next
/// [`flush`](StoreWriter::flush) or [`close`](StoreWriter::close). `Sync`, so
/// several pipeline threads can share one (errors go to whoever flushes).
/// Dropping it without `close` still drains and commits, logging any error.
pub struct StoreWriter {
    path: PathBuf,
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<(WriterStats, Option<StoreError>)>>,
}

impl std::fmt::Debug for StoreWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl StoreWriter {
    /// [`spawn_with`](StoreWriter::spawn_with) the default options: no retention.
    pub fn spawn(path: &Path) -> Result<StoreWriter, StoreError> {
        Self::spawn_with(path, WriterOptions::default())
    }

    /// Opens and migrates on the caller's thread, so a bad path or a too-new
    /// database is an error here rather than a dead thread later. Retention
    /// does not run here: call [`enforce_retention`](StoreWriter::enforce_retention)
    /// at start-up if it should not wait for the first interval.
    pub fn spawn_with(path: &Path, options: WriterOptions) -> Result<StoreWriter, StoreError> {
        let conn = schema::open(path, OpenMode::Create)?;
        let (tx, rx) = bounded::<Msg>(CHANNEL_CAPACITY);
        let mut worker = Worker {
            conn,
            path: path.to_path_buf(),
            options,
            stats: WriterStats::default(),
            first_error: None,
        };
        let thread = std::thread::Builder::new()
            .name("cliptag-store".into())
            .spawn(move || {
                worker.run(rx);
                (worker.stats, worker.first_error.take())
            })
            .map_err(|source| StoreError::Spawn {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(StoreWriter {
            path: path.to_path_buf(),
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers a model, or updates the path of a known one (same hash, moved file).
    pub fn register_model(&self, m: ModelRecord) -> Result<(), StoreError> {
        self.send(Msg::Op(Op::RegisterModel(m)))
    }

    /// Caches text embeddings of prompts, replacing any cached for the same text.
    pub fn put_text_embeddings(
        &self,
        model_id: &str,
        items: Vec<(String, Vec<f32>)>,
    ) -> Result<(), StoreError> {
        self.send(Msg::Op(Op::PutTextEmbeddings {
            model_id: model_id.to_owned(),
            items,
        }))
    }

    /// Makes `labels` the model's active label set: upserts them as active and
    /// marks the model's other labels inactive (kept for old matches).
    pub fn set_labels(&self, model_id: &str, labels: Vec<LabelRecord>) -> Result<(), StoreError> {
        self.send(Msg::Op(Op::SetLabels {
            model_id: model_id.to_owned(),
            labels,
        }))
    }

    /// Writes a window and its matches, replacing any earlier write of the
    /// same (source, model, start_ms). Creates the source on first use and
    /// keeps its uri current.
    pub fn write_segment(&self, s: NewSegment) -> Result<(), StoreError> {
        self.send(Msg::Op(Op::WriteSegment(Box::new(s))))
    }

    /// Records the latest state of a source, replacing the previous one of
    /// the same name. Queued and batched like a segment; `state` must be one
    /// of [`SOURCE_STATES`].
    pub fn put_source_state(&self, s: SourceStateRecord) -> Result<(), StoreError> {
        self.send(Msg::Op(Op::PutSourceState(Box::new(s))))
    }

    /// Blocks until everything sent before it is committed; returns the first
    /// error the writer hit since the last flush (the others are logged).
    pub fn flush(&self) -> Result<(), StoreError> {
        let (reply_tx, reply_rx) = bounded(1);
        self.send(Msg::Barrier(Barrier::Flush(reply_tx)))?;
        match reply_rx.recv() {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(e),
            Err(_) => Err(self.gone()),
        }
    }

    /// Applies the configured retention now, as if the clock read `now`
    /// (unix seconds), after committing everything sent before; waits for
    /// the result. For the daemon at start-up, and for tests. Errors of
    /// earlier writes are left for the next [`flush`](StoreWriter::flush).
    pub fn enforce_retention(&self, now: f64) -> Result<RetentionReport, StoreError> {
        let (reply, reply_rx) = bounded(1);
        self.send(Msg::Barrier(Barrier::Retention { now, reply }))?;
        reply_rx.recv().unwrap_or_else(|_| Err(self.gone()))
    }

    /// Drains the queue, commits, and joins the thread. Returns the first
    /// unreported error if there is one, else the lifetime stats.
    pub fn close(mut self) -> Result<WriterStats, StoreError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<WriterStats, StoreError> {
        // Dropping the only sender is the stop signal: the thread sees
        // "disconnected" only after it has received everything queued.
        drop(self.tx.take());
        let Some(thread) = self.thread.take() else {
            return Err(self.gone());
        };
        match thread.join() {
            Ok((stats, None)) => Ok(stats),
            Ok((_, Some(e))) => Err(e),
            Err(_) => Err(self.gone()),
        }
    }

    fn send(&self, msg: Msg) -> Result<(), StoreError> {
        match &self.tx {
            Some(tx) => tx.send(msg).map_err(|_| self.gone()),
            None => Err(self.gone()),
        }
    }

    fn gone(&self) -> StoreError {
        StoreError::WriterGone {
            path: self.path.clone(),
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        match self.shutdown() {
            Ok(stats) => {
                tracing::debug!(path = %self.path.display(), ?stats, "store writer dropped")
            }
            Err(e) => tracing::error!(
                path = %self.path.display(),
                error = %e,
                "store writer dropped without close; its last error was never reported"
            ),
        }
    }
}

struct Worker {
    conn: Connection,
    path: PathBuf,
    options: WriterOptions,
    stats: WriterStats,
    first_error: Option<StoreError>,
}

#[derive(Default)]
struct BatchOutcome {
    segments: u64,
    failures: Vec<StoreError>,
}

impl Worker {
    fn run(&mut self, rx: crossbeam_channel::Receiver<Msg>) {
        let interval = Some(self.options.retention_interval)
            .filter(|i| !i.is_zero() && self.options.retention.limits_anything());
        let mut next_retention = interval.map(|i| Instant::now() + i);
        loop {
            let first = match next_retention {
                Some(at) => match rx.recv_deadline(at) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => {
                        self.periodic_retention();
                        next_retention = interval.map(|i| Instant::now() + i);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(msg) => msg,
                    Err(_) => break,
                },
            };
            let mut ops = Vec::new();
            let mut barrier = None;
            let mut closing = false;
            match first {
                Msg::Op(op) => ops.push(op),
                Msg::Barrier(b) => barrier = Some(b),
            }
            if barrier.is_none() {
                let deadline = Instant::now() + MAX_BATCH_WAIT;
                while ops.len() < MAX_BATCH_OPS {
                    match rx.recv_deadline(deadline) {
                        Ok(Msg::Op(op)) => ops.push(op),
                        Ok(Msg::Barrier(b)) => {
                            barrier = Some(b);
                            break;
                        }
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            closing = true;
                            break;
                        }
                    }
                }
            }
            if !ops.is_empty() {
                self.write_batch(&ops);
            }
            // The requester may have given up waiting; nothing to do then.
            match barrier {
                Some(Barrier::Flush(reply)) => {
                    let _ = reply.send(self.first_error.take());
                }
                Some(Barrier::Retention { now, reply }) => {
                    let result =
                        retention::apply(&mut self.conn, &self.path, &self.options.retention, now);
                    let _ = reply.send(result);
                    next_retention = interval.map(|i| Instant::now() + i);
                }
                None => {}
            }
            if closing {
                break;
            }
            // A steady stream of ops never lets recv_deadline time out, so
            // the periodic run is also checked between batches.
            if next_retention.is_some_and(|at| Instant::now() >= at) {
                self.periodic_retention();
                next_retention = interval.map(|i| Instant::now() + i);
            }
        }
    }

    /// Errors are logged only: retention failing (a busy database, say) must
    /// not stop ingest, and the next interval tries again.
    fn periodic_retention(&mut self) {
        if let Err(e) = retention::apply(
            &mut self.conn,
            &self.path,
            &self.options.retention,
            unix_now(),
        ) {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                disposition = ?e.disposition(),
                "periodic retention failed"
            );
        }
    }

    fn write_batch(&mut self, ops: &[Op]) {
        let mut attempt = 1;
        loop {
            match try_batch(&mut self.conn, &self.path, ops) {
                Ok(outcome) => {
                    self.stats.transactions += 1;
                    self.stats.segments_written += outcome.segments;
                    for e in outcome.failures {
                        self.fail(e, 1);
                    }
                    return;
                }
                Err(e) if e.is_busy() && attempt < BATCH_ATTEMPTS => {
                    tracing::warn!(path = %self.path.display(), attempt, error = %e, "database busy; retrying batch");
                    attempt += 1;
                }
                Err(e) => {
                    self.fail(e, ops.len() as u64);
                    return;
                }
            }
        }
    }

    fn fail(&mut self, e: StoreError, ops: u64) {
        tracing::error!(
            path = %self.path.display(),
            error = %e,
            disposition = ?e.disposition(),
            ops,
            "store write failed"
        );
        self.stats.failed_ops += ops;
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }
}

/// One transaction for the batch, one savepoint per op: a bad op is rolled
/// back alone and returned in the outcome; an `Err` means the whole batch
/// is lost (nothing of it committed).
fn try_batch(conn: &mut Connection, path: &Path, ops: &[Op]) -> Result<BatchOutcome, StoreError> {
    let n = ops.len();
    let batch_err =
        |what: &str, e| StoreError::sqlite(path, format!("{what} a batch of {n} writes"), e);
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| batch_err("starting", e))?;
    let mut outcome = BatchOutcome::default();
    for op in ops {
        let sp = tx.savepoint().map_err(|e| batch_err("writing", e))?;
        match apply(&sp, path, op) {
            Ok(()) => {
                sp.commit().map_err(|e| batch_err("writing", e))?;
                if matches!(op, Op::WriteSegment(_)) {
                    outcome.segments += 1;
                }
            }
            Err(e) => {
                // Default drop behaviour of a savepoint is roll back + release.
                sp.finish()
                    .map_err(|e| batch_err("rolling back one op of", e))?;
                if tx.is_autocommit() {
                    // SQLite itself abandoned the transaction (I/O error, disk
                    // full): what came before this op is gone too.
                    return Err(e);
                }
                outcome.failures.push(e);
            }
        }
    }
    tx.commit().map_err(|e| batch_err("committing", e))?;
    Ok(outcome)
}

fn apply(conn: &Connection, path: &Path, op: &Op) -> Result<(), StoreError> {
    match op {
        Op::RegisterModel(m) => register_model(conn, path, m),
        Op::PutTextEmbeddings { model_id, items } => {
            put_text_embeddings(conn, path, model_id, items)
        }
        Op::SetLabels { model_id, labels } => set_labels(conn, path, model_id, labels),
        Op::WriteSegment(s) => write_segment(conn, path, s),
        Op::PutSourceState(s) => put_source_state(conn, path, s),
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn register_model(conn: &Connection, path: &Path, m: &ModelRecord) -> Result<(), StoreError> {
    let err = |e| StoreError::sqlite(path, format!("registering model {}", m.id), e);
    if m.id.is_empty() || m.embedding_dim == 0 {
        return Err(StoreError::bad_data(
            path,
            format!("model {:?} needs an id and a non-zero embedding_dim", m.id),
        ));
    }
    if let Some(dim) = model_dim(conn, path, &m.id)? {
        if dim != m.embedding_dim {
            // Same content hash cannot change shape; the caller mis-measured.
            return Err(StoreError::bad_data(
                path,
                format!(
                    "model {} is registered with embedding_dim {dim}, not {}",
                    m.id, m.embedding_dim
                ),
            ));
        }
    }
    conn.prepare_cached(
        "INSERT INTO models (id, path, embedding_dim, first_seen) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (id) DO UPDATE SET path = excluded.path",
    )
    .and_then(|mut st| st.execute(params![m.id, m.path, m.embedding_dim, unix_now()]))
    .map_err(err)?;
    Ok(())
}

fn model_dim(conn: &Connection, path: &Path, model_id: &str) -> Result<Option<usize>, StoreError> {
    conn.prepare_cached("SELECT embedding_dim FROM models WHERE id = ?1")
        .and_then(|mut st| st.query_row([model_id], |r| r.get(0)).optional())
        .map_err(|e| StoreError::sqlite(path, format!("looking up model {model_id}"), e))
}

/// The model's embedding size; every embedding written under it must match,
/// or cosine similarities against it would be meaningless.
fn require_model(conn: &Connection, path: &Path, model_id: &str) -> Result<usize, StoreError> {
    model_dim(conn, path, model_id)?.ok_or_else(|| StoreError::UnknownModel {
        path: path.to_path_buf(),
        model_id: model_id.to_owned(),
    })
}

fn check_dim(
    path: &Path,
    what: impl FnOnce() -> String,
    got: usize,
    want: usize,
) -> Result<(), StoreError> {
    if got == want {
        Ok(())
    } else {
        Err(StoreError::bad_data(
            path,
            format!("{} has {got} dimensions, the model has {want}", what()),
        ))
    }
}

fn put_text_embeddings(
    conn: &Connection,
    path: &Path,
    model_id: &str,
    items: &[(String, Vec<f32>)],
) -> Result<(), StoreError> {
    let dim = require_model(conn, path, model_id)?;
    for (text, v) in items {
        check_dim(path, || format!("text embedding of {text:?}"), v.len(), dim)?;
    }
    let err = |e| {
        StoreError::sqlite(
            path,
            format!("caching text embeddings for model {model_id}"),
            e,
        )
    };
    let mut st = conn
        .prepare_cached(
            "INSERT INTO text_embeddings (model_id, text, embedding) VALUES (?1, ?2, ?3) \
             ON CONFLICT (model_id, text) DO UPDATE SET embedding = excluded.embedding",
        )
        .map_err(err)?;
    for (text, v) in items {
        st.execute(params![model_id, text, f32s_to_blob(v)])
            .map_err(err)?;
    }
    Ok(())
}

fn set_labels(
    conn: &Connection,
    path: &Path,
    model_id: &str,
    labels: &[LabelRecord],
) -> Result<(), StoreError> {
    let dim = require_model(conn, path, model_id)?;
    for l in labels {
        check_dim(
            path,
            || format!("label {:?}", l.text),
            l.embedding.len(),
            dim,
        )?;
    }
    let err = |e| StoreError::sqlite(path, format!("setting labels of model {model_id}"), e);
    conn.prepare_cached("UPDATE labels SET active = 0 WHERE model_id = ?1")
        .and_then(|mut st| st.execute([model_id]))
        .map_err(err)?;
    let mut st = conn
        .prepare_cached(
            "INSERT INTO labels (model_id, text, prompts, embedding, active) \
             VALUES (?1, ?2, ?3, ?4, 1) \
             ON CONFLICT (model_id, text) DO UPDATE SET \
             prompts = excluded.prompts, embedding = excluded.embedding, active = 1",
        )
        .map_err(err)?;
    for l in labels {
        let prompts = serde_json::to_string(&l.prompts).map_err(|e| {
            StoreError::bad_data(path, format!("prompts of label {:?}: {e}", l.text))
        })?;
        st.execute(params![
            model_id,
            l.text,
            prompts,
            f32s_to_blob(&l.embedding)
        ])
        .map_err(err)?;
    }
    Ok(())
}

/// Everything that can be checked without writing, so the error names the
/// problem instead of a constraint.
fn validate_segment(path: &Path, s: &NewSegment, dim: usize) -> Result<(), StoreError> {
    let bad = |what: String| {
        Err(StoreError::bad_data(
            path,
            format!("segment {}@{}ms: {what}", s.source, s.start_ms),
        ))
    };
    if s.source.is_empty() {
        return bad("empty source name".into());
    }
    if s.end_ms < s.start_ms {
        return bad(format!("ends at {}ms, before it starts", s.end_ms));
    }
    // SQLite stores NaN as NULL, which would then fail every read of the row.
    if !s.wall_time.is_finite() {
        return bad(format!("wall_time {}", s.wall_time));
    }
    check_dim(
        path,
        || format!("segment {}@{}ms embedding", s.source, s.start_ms),
        s.embedding.len(),
        dim,
    )?;
    let mut ranks: Vec<u32> = s.matches.iter().map(|m| m.rank).collect();
    ranks.sort_unstable();
    if ranks.windows(2).any(|w| w[0] == w[1]) || ranks.first() == Some(&0) {
        return bad(format!(
            "match ranks {ranks:?} are not distinct and 1-based"
        ));
    }
    if let Some(m) = s
        .matches
        .iter()
        .find(|m| !m.cosine.is_finite() || !m.probability.is_finite())
    {
        return bad(format!(
            "match {:?} has cosine {} probability {}",
            m.label, m.cosine, m.probability
        ));
    }
    Ok(())
}

fn write_segment(conn: &Connection, path: &Path, s: &NewSegment) -> Result<(), StoreError> {
    let dim = require_model(conn, path, &s.model_id)?;
    validate_segment(path, s, dim)?;
    let ctx = || format!("writing segment {}@{}ms", s.source, s.start_ms);
    let err = |e| StoreError::sqlite(path, ctx(), e);

    // Resolve every label before writing anything, so an unknown one fails
    // the segment cleanly.
    let mut label_ids = Vec::with_capacity(s.matches.len());
    {
        let mut st = conn
            .prepare_cached("SELECT id FROM labels WHERE model_id = ?1 AND text = ?2")
            .map_err(err)?;
        for m in &s.matches {
            let id: Option<i64> = st
                .query_row(params![s.model_id, m.label], |r| r.get(0))
                .optional()
                .map_err(err)?;
            match id {
                Some(id) => label_ids.push(id),
                None => {
                    return Err(StoreError::UnknownLabel {
                        path: path.to_path_buf(),
                        model_id: s.model_id.clone(),
                        label: m.label.clone(),
                        source_name: s.source.clone(),
                        start_ms: s.start_ms,
                    })
                }
            }
        }
    }

    let source_id: i64 = conn
        .prepare_cached(
            "INSERT INTO sources (name, uri) VALUES (?1, ?2) \
             ON CONFLICT (name) DO UPDATE SET uri = excluded.uri RETURNING id",
        )
        .and_then(|mut st| st.query_row(params![s.source, s.source_uri], |r| r.get(0)))
        .map_err(err)?;

    let keyframes = serde_json::to_string(&s.keyframes_ms)
        .map_err(|e| StoreError::bad_data(path, format!("{}: keyframes: {e}", ctx())))?;
    // An upsert rather than INSERT OR REPLACE keeps the row id stable across
    // re-runs, so ids a user saw in earlier query output stay valid.
    let segment_id: i64 = conn
        .prepare_cached(
            "INSERT INTO segments (source_id, model_id, start_ms, end_ms, wall_time, \
             frame_count, keyframes_ms, clip_calls, embedding) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (source_id, model_id, start_ms) DO UPDATE SET \
             end_ms = excluded.end_ms, wall_time = excluded.wall_time, \
             frame_count = excluded.frame_count, keyframes_ms = excluded.keyframes_ms, \
             clip_calls = excluded.clip_calls, embedding = excluded.embedding \
             RETURNING id",
        )
        .and_then(|mut st| {
            st.query_row(
                params![
                    source_id,
                    s.model_id,
                    s.start_ms,
                    s.end_ms,
                    s.wall_time,
                    s.frame_count,
                    keyframes,
                    s.clip_calls,
                    f32s_to_blob(&s.embedding)
                ],
                |r| r.get(0),
            )
        })
        .map_err(err)?;

    conn.prepare_cached("DELETE FROM matches WHERE segment_id = ?1")
        .and_then(|mut st| st.execute([segment_id]))
        .map_err(err)?;
    let mut st = conn
        .prepare_cached(
            "INSERT INTO matches (segment_id, label_id, rank, cosine, probability) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(err)?;
    for (m, label_id) in s.matches.iter().zip(label_ids) {
        st.execute(params![
            segment_id,
            label_id,
            m.rank,
            m.cosine,
            m.probability
        ])
        .map_err(err)?;
    }
    Ok(())
}

fn put_source_state(
    conn: &Connection,
    path: &Path,
    s: &SourceStateRecord,
) -> Result<(), StoreError> {
    let bad = |what: String| {
        Err(StoreError::bad_data(
            path,
            format!("state of source {:?}: {what}", s.name),
        ))
    };
    if s.name.is_empty() {
        return bad("empty source name".into());
    }
    if !SOURCE_STATES.contains(&s.state.as_str()) {
        return bad(format!("{:?} is not one of {SOURCE_STATES:?}", s.state));
    }
    // NaN would be stored as NULL: a violation for updated_at, a silent
    // "never" for last_frame_time.
    if !s.updated_at.is_finite() || s.last_frame_time.is_some_and(|t| !t.is_finite()) {
        return bad(format!(
            "updated_at {} last_frame_time {:?}",
            s.updated_at, s.last_frame_time
        ));
    }
    conn.prepare_cached(
        "INSERT INTO source_states (name, uri, state, reason, last_frame_time, frames, \
         frames_dropped, reconnects, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (name) DO UPDATE SET uri = excluded.uri, state = excluded.state, \
         reason = excluded.reason, last_frame_time = excluded.last_frame_time, \
         frames = excluded.frames, frames_dropped = excluded.frames_dropped, \
         reconnects = excluded.reconnects, updated_at = excluded.updated_at",
    )
    .and_then(|mut st| {
        st.execute(params![
            s.name,
            s.uri,
            s.state,
            s.reason,
            s.last_frame_time,
            s.frames,
            s.frames_dropped,
            s.reconnects,
            s.updated_at
        ])
    })
    .map_err(|e| {
        StoreError::sqlite(path, format!("writing the state of source {:?}", s.name), e)
    })?;
    Ok(())
}
