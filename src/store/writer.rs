//! The single writer thread: ops queued from any thread, gathered into batched
//! transactions (one savepoint per op), and the retention it runs between batches.
//!
//! What each op does in SQL is in `ops.rs`; what retention deletes is in `retention.rs`.
//!
//! A full disk pauses the writer instead of failing the batch: it keeps the batch, makes
//! what room it may (the reserve file, `min_free` retention), retries with a growing
//! wait, and commits it when room is back. Meanwhile [`StoreWriter::paused`] says why
//! and since when, producers block behind the channel, and [`StoreWriter::check`] and
//! [`StoreWriter::put_source_state`] never block, so the daemon loop stays free to
//! answer signals. Told to close while paused, it gives up the batch (never committed,
//! so nothing committed is lost) and reports the error.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use rusqlite::{Connection, TransactionBehavior};

use super::error::StoreError;
use super::indexer::Indexer;
use super::ops::{apply, Op};
use super::records::{
    LabelRecord, ModelRecord, NewSegment, Rescored, SourceStateRecord, TaggedFile,
};
use super::retention::{self, Retention, RetentionReport};
use super::schema::{self, OpenMode};
use super::space::{self, human_bytes};
use crate::clock::{monotonic_ms, Clock, SystemClock};

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
/// An I/O error with room on the disk (a USB disk that came loose for a moment) is
/// retried this many times in all, waiting longer each time, before it stops the run.
const IO_ATTEMPTS: u32 = 4;
/// Longest wait between two tries of a batch held on a full disk.
const MAX_ROOM_WAIT: Duration = Duration::from_secs(10);
/// How often a pause that goes on is logged again.
const PAUSE_REMINDER: Duration = Duration::from_secs(600);
/// The writer thread wakes at least this often, so its heartbeat shows it is not stuck.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// With `min_free` set, free space is measured after every batch (one statvfs) and
/// retention runs as soon as it is short; after a run that could not make the room
/// (someone else's files fill the disk), not again for this long.
const FRUITLESS_RETENTION_GAP: Duration = Duration::from_secs(60);

/// Why the writer is holding a batch instead of committing it, and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct WriterPause {
    /// Unix seconds, from the writer's clock.
    pub since: f64,
    pub reason: String,
    /// Writes held in the batch in hand (more may wait in the channel).
    pub held: usize,
}

/// What the writer thread shares with whoever watches it.
#[derive(Debug, Default)]
struct Shared {
    pause: Mutex<Option<WriterPause>>,
    beat_ms: AtomicU64,
    /// Set by close: a paused writer gives up instead of waiting for room.
    stopping: AtomicBool,
}

impl Shared {
    fn beat(&self) {
        self.beat_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    fn set_pause(&self, pause: Option<WriterPause>) {
        if let Ok(mut p) = self.pause.lock() {
            *p = pause;
        }
    }
}

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

/// How [`StoreWriter::spawn_with`] sets the writer up; the default applies
/// no retention.
#[derive(Clone)]
pub struct WriterOptions {
    pub retention: Retention,
    /// How often the writer thread checks retention on its own, counted from
    /// start and from each [`StoreWriter::enforce_retention`]. Ignored
    /// (no periodic check) when `retention` limits nothing or this is zero.
    pub retention_interval: Duration,
    /// The wall clock retention ages segments by and models are first seen at.
    pub clock: Arc<dyn Clock>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            retention: Retention::default(),
            retention_interval: Duration::from_secs(60),
            clock: Arc::new(SystemClock),
        }
    }
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
    shared: Arc<Shared>,
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
        if let Some(min_free) = options.retention.min_free_bytes {
            space::keep_reserve(path, min_free);
        }
        let (tx, rx) = bounded::<Msg>(CHANNEL_CAPACITY);
        let shared = Arc::new(Shared::default());
        shared.beat();
        let mut worker = Worker {
            conn,
            path: path.to_path_buf(),
            options,
            shared: shared.clone(),
            indexer: None,
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
            shared,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why and since when the writer is holding writes (a full disk), or `None`.
    pub fn paused(&self) -> Option<WriterPause> {
        self.shared.pause.lock().ok().and_then(|p| p.clone())
    }

    /// How long since the writer thread last showed it is not stuck (it wakes at
    /// least every second, also while paused).
    pub fn silent_for(&self) -> Duration {
        Duration::from_millis(
            monotonic_ms().saturating_sub(self.shared.beat_ms.load(Ordering::Relaxed)),
        )
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

    /// Replaces the matches of stored windows with those of the label set `label_set` (a
    /// fingerprint) scored from their stored embeddings, and marks them scored by it: one
    /// op, so a chunk is written whole or not at all, between live windows' batches.
    pub fn rescore(
        &self,
        model_id: &str,
        label_set: &str,
        windows: Vec<Rescored>,
    ) -> Result<(), StoreError> {
        self.send(Msg::Op(Op::Rescore {
            model_id: model_id.to_owned(),
            label_set: label_set.to_owned(),
            windows,
        }))
    }

    /// Records that a file was tagged to its end; queued after its segments.
    pub fn mark_file_tagged(&self, f: TaggedFile) -> Result<(), StoreError> {
        self.send(Msg::Op(Op::MarkFileTagged(Box::new(f))))
    }

    /// Records the latest state of a source, replacing the previous one of
    /// the same name. Queued and batched like a segment; `state` must be one
    /// of [`SOURCE_STATES`]. Never blocks: when the writer is a whole channel
    /// behind (a full disk) the state is dropped and `Ok(false)` returned, since
    /// the next refresh carries a newer one.
    pub fn put_source_state(&self, s: SourceStateRecord) -> Result<bool, StoreError> {
        match &self.tx {
            Some(tx) => match tx.try_send(Msg::Op(Op::PutSourceState(Box::new(s)))) {
                Ok(()) => Ok(true),
                Err(crossbeam_channel::TrySendError::Full(_)) => Ok(false),
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(self.gone()),
            },
            None => Err(self.gone()),
        }
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

    /// [`flush`](StoreWriter::flush) that waits at most `timeout` and never blocks
    /// on a full channel: `Ok(true)` when everything sent before is committed,
    /// `Ok(false)` when the writer is still at it (paused on a full disk, or a big
    /// batch), the first error when it hit one. For a loop that must stay free.
    pub fn check(&self, timeout: Duration) -> Result<bool, StoreError> {
        let (reply_tx, reply_rx) = bounded(1);
        let Some(tx) = &self.tx else {
            return Err(self.gone());
        };
        match tx.try_send(Msg::Barrier(Barrier::Flush(reply_tx))) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(_)) => return Ok(false),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => return Err(self.gone()),
        }
        match reply_rx.recv_timeout(timeout) {
            Ok(None) => Ok(true),
            Ok(Some(e)) => Err(e),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Ok(false),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(self.gone()),
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
        // "disconnected" only after it has received everything queued. A writer
        // paused on a full disk would never get there: it is told to give up.
        self.shared.stopping.store(true, Ordering::SeqCst);
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
    shared: Arc<Shared>,
    /// The search index's upkeep; made when the thread starts.
    indexer: Option<Indexer>,
    stats: WriterStats,
    first_error: Option<StoreError>,
}

#[derive(Default)]
struct BatchOutcome {
    segments: u64,
    failures: Vec<StoreError>,
    /// Segments committed: (id, index of its op), for the search index.
    written: Vec<(i64, usize)>,
}

impl Worker {
    fn run(&mut self, rx: crossbeam_channel::Receiver<Msg>) {
        self.indexer = Some(Indexer::start(&self.conn, &self.path));
        let interval = Some(self.options.retention_interval)
            .filter(|i| !i.is_zero() && self.options.retention.limits_anything());
        let mut next_retention = interval.map(|i| Instant::now() + i);
        let mut retry_min_free_at: Option<Instant> = None;
        loop {
            self.shared.beat();
            let wake = Instant::now() + HEARTBEAT;
            let first = match rx.recv_deadline(next_retention.map_or(wake, |at| at.min(wake))) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    if next_retention.is_some_and(|at| Instant::now() >= at) {
                        self.periodic_retention();
                        next_retention = interval.map(|i| Instant::now() + i);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
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
                if self.short_of_room(retry_min_free_at) {
                    self.periodic_retention();
                    retry_min_free_at = self
                        .short_of_room(None)
                        .then(|| Instant::now() + FRUITLESS_RETENTION_GAP);
                }
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

    /// The configured retention, with `min_free` raised by the reserve file's size while
    /// that file is missing (used up by a full disk), so that room for it comes back too.
    fn retention_now(&self) -> Retention {
        let mut r = self.options.retention;
        if let Some(min_free) = r.min_free_bytes {
            if !space::reserve_path(&self.path).exists() {
                r.min_free_bytes = Some(min_free + space::reserve_bytes(min_free));
            }
        }
        r
    }

    /// Whether the disk has less free than `min_free` (plus the missing reserve) wants,
    /// unless a fruitless run asked not to try again before `not_before`.
    fn short_of_room(&self, not_before: Option<Instant>) -> bool {
        if not_before.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let Some(wanted) = self.retention_now().min_free_bytes else {
            return false;
        };
        space::free_bytes(&self.path).is_some_and(|free| free < wanted)
    }

    /// Errors are logged only: retention failing (a busy database, say) must
    /// not stop ingest, and the next interval tries again.
    fn periodic_retention(&mut self) {
        let now = self.options.clock.now();
        let retention = self.retention_now();
        if let Err(e) = retention::apply(&mut self.conn, &self.path, &retention, now) {
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                disposition = ?e.disposition(),
                "periodic retention failed"
            );
        }
        if let Some(min_free) = self.options.retention.min_free_bytes {
            space::keep_reserve(&self.path, min_free);
        }
    }

    fn write_batch(&mut self, ops: &[Op]) {
        let mut attempt = 1;
        let mut io_attempt = 1;
        loop {
            let now = self.options.clock.now();
            match try_batch(&mut self.conn, &self.path, ops, now) {
                Ok(outcome) => {
                    self.committed(ops, outcome);
                    return;
                }
                Err(e) if e.is_busy() && attempt < BATCH_ATTEMPTS => {
                    tracing::warn!(path = %self.path.display(), attempt, error = %e, "database busy; retrying batch");
                    attempt += 1;
                }
                Err(e) if e.is_out_of_space() => {
                    match self.hold_until_room(ops, e) {
                        Ok(outcome) => self.committed(ops, outcome),
                        Err(e) => self.fail(e, ops.len() as u64),
                    }
                    return;
                }
                Err(e)
                    if e.disposition() == crate::Disposition::Retry
                        && !e.is_busy()
                        && io_attempt < IO_ATTEMPTS =>
                {
                    let wait = Duration::from_secs(1 << io_attempt);
                    tracing::warn!(path = %self.path.display(), attempt = io_attempt, error = %e, wait = ?wait, "database I/O error; retrying batch");
                    self.sleep(wait);
                    io_attempt += 1;
                }
                Err(e) => {
                    self.fail(e, ops.len() as u64);
                    return;
                }
            }
        }
    }

    fn committed(&mut self, ops: &[Op], outcome: BatchOutcome) {
        if let Some(indexer) = &mut self.indexer {
            indexer.after_batch(&self.conn, &self.path, ops, &outcome.written);
        }
        self.stats.transactions += 1;
        self.stats.segments_written += outcome.segments;
        for e in outcome.failures {
            self.fail(e, 1);
        }
    }

    /// The disk is full: keep the batch, make what room may be made, and try again,
    /// waiting longer each time (up to [`MAX_ROOM_WAIT`]), until it commits or the
    /// writer is told to close. Logged when it starts, every [`PAUSE_REMINDER`], and
    /// when it ends.
    fn hold_until_room(
        &mut self,
        ops: &[Op],
        first: StoreError,
    ) -> Result<BatchOutcome, StoreError> {
        let started = Instant::now();
        let free = space::free_bytes(&self.path).unwrap_or(0);
        let reason = format!(
            "the disk holding the database is full ({} free)",
            human_bytes(free)
        );
        tracing::warn!(
            path = %self.path.display(),
            held = ops.len(),
            error = %first,
            "tagging paused: {reason}; the writes are held and retried as room comes back{}",
            if self.options.retention.min_free_bytes.is_some() {
                " (retention is deleting the oldest segments)"
            } else {
                " (set [retention] min_free_mb to let cliptag delete its oldest segments)"
            }
        );
        self.shared.set_pause(Some(WriterPause {
            since: self.options.clock.now(),
            reason,
            held: ops.len(),
        }));
        let mut wait = Duration::from_millis(500);
        let mut last_error = first;
        let mut reminder = started + PAUSE_REMINDER;
        let result = loop {
            if self.shared.stopping.load(Ordering::SeqCst) {
                break Err(last_error);
            }
            self.make_room();
            match try_batch(&mut self.conn, &self.path, ops, self.options.clock.now()) {
                Ok(outcome) => break Ok(outcome),
                Err(e) if e.is_out_of_space() || e.is_busy() => last_error = e,
                Err(e) => break Err(e),
            }
            if Instant::now() >= reminder {
                reminder += PAUSE_REMINDER;
                tracing::warn!(
                    path = %self.path.display(),
                    paused_for = %humantime::format_duration(Duration::from_secs(started.elapsed().as_secs())),
                    free = %human_bytes(space::free_bytes(&self.path).unwrap_or(0)),
                    "tagging still paused: the disk holding the database is full"
                );
            }
            self.sleep(wait);
            wait = (wait * 2).min(MAX_ROOM_WAIT);
        };
        self.shared.set_pause(None);
        if result.is_ok() {
            tracing::info!(
                path = %self.path.display(),
                paused_for = %humantime::format_duration(Duration::from_millis(started.elapsed().as_millis() as u64)),
                free = %human_bytes(space::free_bytes(&self.path).unwrap_or(0)),
                "disk space is back: the held writes are committed and tagging goes on"
            );
            if let Some(min_free) = self.options.retention.min_free_bytes {
                space::keep_reserve(&self.path, min_free);
            }
        }
        result
    }

    /// On a full disk: hand back the reserve file, then let `min_free` retention delete
    /// the oldest segments. Errors are expected here (retention needs some room too)
    /// and only logged at debug: the pause itself is what the user is told about.
    fn make_room(&mut self) {
        let Some(_) = self.options.retention.min_free_bytes else {
            return;
        };
        space::release_reserve(&self.path);
        let now = self.options.clock.now();
        let retention = self.retention_now();
        if let Err(e) = retention::apply(&mut self.conn, &self.path, &retention, now) {
            tracing::debug!(path = %self.path.display(), error = %e, "retention could not make room yet");
        }
    }

    /// Sleeps in heartbeat steps, ending early when the writer is told to close.
    fn sleep(&self, total: Duration) {
        let until = Instant::now() + total;
        while !self.shared.stopping.load(Ordering::SeqCst) {
            self.shared.beat();
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(250)));
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
fn try_batch(
    conn: &mut Connection,
    path: &Path,
    ops: &[Op],
    now: f64,
) -> Result<BatchOutcome, StoreError> {
    let n = ops.len();
    let batch_err =
        |what: &str, e| StoreError::sqlite(path, format!("{what} a batch of {n} writes"), e);
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| batch_err("starting", e))?;
    let mut outcome = BatchOutcome::default();
    for (index, op) in ops.iter().enumerate() {
        let sp = tx.savepoint().map_err(|e| batch_err("writing", e))?;
        match apply(&sp, path, op, now) {
            Ok(id) => {
                sp.commit().map_err(|e| batch_err("writing", e))?;
                if let Some(id) = id {
                    outcome.segments += 1;
                    outcome.written.push((id, index));
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
