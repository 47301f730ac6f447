//! Retention: deleting old segments so the database fits the box's disk.
//!
//! Runs on the writer thread's connection, between batches, so it never
//! races the writer for the lock. Rules, and why:
//!
//! - **Only segments go** (their matches with them, by `ON DELETE CASCADE`).
//!   Models, labels, cached text embeddings and sources are small and are
//!   what makes the remaining segments readable.
//! - **Oldest first, by `processed_at`** (when each window was written: a file recorded
//!   last year and tagged today is today's entry), so what is kept is always one
//!   contiguous recent stretch, never a sample with holes.
//! - **In chunks, each its own transaction**: the WAL and the lock hold stay
//!   bounded however much is due (the first run on a big old database), and
//!   an error loses at most the chunk in hand.
//! - **Size is pages in use × page size.** Free pages and the WAL do not
//!   count: free pages because on a database that cannot shrink (still
//!   `auto_vacuum = NONE`, its conversion failed) the loop must still end,
//!   and the WAL because it is checkpointed away at the end.
//! - **Then `incremental_vacuum` and a TRUNCATE checkpoint**: deleting rows
//!   only frees pages inside the file; these two are what hand the space back
//!   to the filesystem.
//! - **`min_free` watches the disk, not the file**: the oldest segments go, a
//!   fixed chunk at a time with the space handed back after each, until the file
//!   system has that much free, after a TRUNCATE checkpoint has handed back what
//!   the WAL held. Eight chunks in a row that free nothing measurable end the
//!   run (a reader holding the WAL, another program filling the disk), so cliptag
//!   never deletes its whole log to feed someone else's writes; the next run
//!   tries again.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, Params, TransactionBehavior};
use serde::Deserialize;

use super::error::StoreError;
use super::space::human_bytes;
use crate::settings::{Invalid, Setting};

/// What retention keeps; `None` does not limit. The default keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Retention {
    /// Delete segments written (`processed_at`) longer ago than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest segments until the pages in use fit in this many
    /// bytes (the WAL not counted; it is checkpointed away afterwards).
    pub max_db_bytes: Option<u64>,
    /// Delete the oldest segments while the database's file system has less than
    /// this many bytes free (and keep a reserve file for a disk that is already
    /// full: see `space.rs`).
    pub min_free_bytes: Option<u64>,
}

impl Retention {
    pub fn limits_anything(&self) -> bool {
        self.max_age.is_some() || self.max_db_bytes.is_some() || self.min_free_bytes.is_some()
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

/// The `[retention]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    days: Option<Setting<f64>>,
    max_db_mb: Option<Setting<u64>>,
    min_free_mb: Option<Setting<u64>>,
}

impl RetentionSection {
    /// Keeps everything unless told otherwise.
    pub fn validate(&self) -> Result<Retention, Invalid> {
        let mut retention = Retention::default();
        if let Some(d) = &self.days {
            let v = *d.get();
            if !(v.is_finite() && v > 0.0 && v < 100_000.0) {
                return Err(Invalid::at(
                    "retention.days",
                    d,
                    format!("expected a positive number of days, got {v}"),
                ));
            }
            retention.max_age = Some(Duration::from_secs_f64(v * 86_400.0));
        }
        if let Some(m) = &self.max_db_mb {
            if *m.get() == 0 {
                return Err(Invalid::at(
                    "retention.max_db_mb",
                    m,
                    "expected a positive size in MB",
                ));
            }
            retention.max_db_bytes = Some(m.get() * 1024 * 1024);
        }
        if let Some(m) = &self.min_free_mb {
            if *m.get() == 0 || *m.get() > 1 << 40 {
                return Err(Invalid::at(
                    "retention.min_free_mb",
                    m,
                    "expected a positive size in MB",
                ));
            }
            retention.min_free_bytes = Some(m.get() * 1024 * 1024);
        }
        Ok(retention)
    }
}

/// Rows per age-retention transaction: a few MB of WAL with 512-float embeddings.
const AGE_CHUNK: u64 = 2000;
/// Size retention deletes 1/SIZE_CHUNK_DIVISOR of the segments per step...
const SIZE_CHUNK_DIVISOR: u64 = 20;
/// ...but at least this many, so a small database converges in a few steps.
const SIZE_CHUNK_MIN: u64 = 100;
/// Rows per free-space step: each step hands its space back before the next is
/// measured, and must fit in the WAL room the reserve file gives (see `space.rs`).
const FREE_CHUNK: u64 = 200;
/// Chunks in a row that free no measurable space before a run gives up for now.
const FRUITLESS_CHUNKS: u32 = 8;
/// Pages one incremental-vacuum step moves on a short disk: each step's WAL is
/// checkpointed away before the next, so a vacuum never needs more room than this.
const VACUUM_STEP: u64 = 64;

pub(crate) fn apply(
    conn: &mut Connection,
    path: &Path,
    retention: &Retention,
    now: f64,
) -> Result<RetentionReport, StoreError> {
    if !now.is_finite() {
        return Err(StoreError::bad_data(
            path,
            format!("retention clock reading {now}"),
        ));
    }
    let bytes_before = used_bytes(conn, path)?;

    let mut by_age = 0;
    if let Some(max_age) = retention.max_age {
        let cutoff = now - max_age.as_secs_f64();
        loop {
            let n = delete_chunk(
                conn,
                path,
                "DELETE FROM segments WHERE id IN (SELECT id FROM segments \
                 WHERE processed_at < ?1 ORDER BY processed_at, id LIMIT ?2)",
                params![cutoff, AGE_CHUNK],
            )?;
            by_age += n;
            if n < AGE_CHUNK {
                break;
            }
        }
        if by_age > 0 {
            tracing::info!(
                path = %path.display(),
                segments = by_age,
                max_age = %humantime::format_duration(max_age),
                cutoff,
                "retention: deleted segments older than max_age"
            );
        }
    }

    let mut by_size = 0;
    if let Some(limit) = retention.max_db_bytes {
        // Counted once: this thread is the only writer, so what it deletes is all that
        // changes (a count per chunk scanned an index of 10⁷ entries each time).
        let mut remaining = segment_count(conn, path)?;
        loop {
            let used = used_bytes(conn, path)?;
            if used <= limit {
                break;
            }
            if remaining == 0 {
                tracing::warn!(
                    path = %path.display(),
                    used_bytes = used,
                    max_db_bytes = limit,
                    "retention: database is over max_db_bytes with no segments left; \
                     models, labels and cached text embeddings are never deleted"
                );
                break;
            }
            let chunk = (remaining / SIZE_CHUNK_DIVISOR).max(SIZE_CHUNK_MIN);
            let deleted = delete_oldest(conn, path, chunk)?;
            remaining = remaining.saturating_sub(deleted);
            by_size += deleted;
        }
        if by_size > 0 {
            tracing::info!(
                path = %path.display(),
                segments = by_size,
                max_db_bytes = limit,
                "retention: deleted the oldest segments to fit max_db_bytes"
            );
        }
    }

    let mut by_free = 0;
    if let Some(min_free) = retention.min_free_bytes {
        let mut free = free_bytes(path)?;
        if free < min_free {
            // The WAL grows between checkpoints and keeps its size after one: on a small
            // disk it may be what is short, and handing it back deletes nothing.
            checkpoint(conn, path)?;
            free = free_bytes(path)?;
        }
        let mut fruitless = 0;
        while free < min_free {
            if !has_segments(conn, path)? {
                tracing::warn!(
                    path = %path.display(),
                    free = %human_bytes(free),
                    min_free = %human_bytes(min_free),
                    "retention: the disk has less than min_free_mb free and no segments are left to delete"
                );
                break;
            }
            by_free += delete_oldest(conn, path, FREE_CHUNK)?;
            // In steps, each checkpointed away: moving pages writes them to the WAL first,
            // and on a full disk the WAL has only the room the last step handed back.
            checkpoint(conn, path)?;
            while freelist_count(conn, path)? > 0 {
                incremental_vacuum_pages(conn, path, VACUUM_STEP)?;
                checkpoint(conn, path)?;
            }
            let now_free = free_bytes(path)?;
            // Space comes back a page at a time, so one chunk of small rows may free
            // nothing measurable; several in a row mean someone else takes the room.
            fruitless = if now_free <= free { fruitless + 1 } else { 0 };
            if fruitless >= FRUITLESS_CHUNKS {
                tracing::warn!(
                    path = %path.display(),
                    free = %human_bytes(now_free),
                    "retention: deleting segments freed no disk space (a reader holds the WAL, \
                     or another program is filling the disk); trying again later"
                );
                break;
            }
            free = now_free;
        }
        if by_free > 0 {
            tracing::info!(
                path = %path.display(),
                segments = by_free,
                free = %human_bytes(free),
                min_free = %human_bytes(min_free),
                "retention: deleted the oldest segments to keep min_free_mb free on the disk"
            );
        }
    }

    // Also when nothing was deleted now: free pages may be left over from
    // an earlier run that failed half-way, or from before the database was
    // converted to incremental vacuum.
    if freelist_count(conn, path)? > 0 {
        incremental_vacuum(conn, path)?;
    }
    if by_age + by_size + by_free > 0 {
        checkpoint(conn, path)?;
    }
    let report = RetentionReport {
        segments_deleted: by_age + by_size + by_free,
        bytes_before,
        bytes_after: used_bytes(conn, path)?,
    };
    if report.segments_deleted > 0 {
        tracing::info!(path = %path.display(), ?report, "retention done");
    } else {
        tracing::debug!(path = %path.display(), ?report, "retention: nothing to delete");
    }
    Ok(report)
}

fn delete_chunk(
    conn: &mut Connection,
    path: &Path,
    sql: &str,
    params: impl Params,
) -> Result<u64, StoreError> {
    let err = |e| StoreError::sqlite(path, "retention: deleting segments", e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let n = tx.execute(sql, params).map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(n as u64)
}

fn pragma_u64(conn: &Connection, path: &Path, name: &str) -> Result<u64, StoreError> {
    conn.pragma_query_value(None, name, |r| r.get(0))
        .map_err(|e| StoreError::sqlite(path, format!("retention: reading {name}"), e))
}

fn freelist_count(conn: &Connection, path: &Path) -> Result<u64, StoreError> {
    pragma_u64(conn, path, "freelist_count")
}

/// What retention compares with `max_db_bytes` (see the module rules).
fn used_bytes(conn: &Connection, path: &Path) -> Result<u64, StoreError> {
    let pages = pragma_u64(conn, path, "page_count")?;
    let free = freelist_count(conn, path)?;
    Ok(pages.saturating_sub(free) * pragma_u64(conn, path, "page_size")?)
}

fn free_bytes(path: &Path) -> Result<u64, StoreError> {
    super::space::free_bytes(path).ok_or_else(|| {
        StoreError::bad_data(
            path,
            "retention: cannot read the free space of the database's disk",
        )
    })
}

/// Deletes the `n` oldest segments (by when they were tagged), in one transaction.
fn delete_oldest(conn: &mut Connection, path: &Path, n: u64) -> Result<u64, StoreError> {
    delete_chunk(
        conn,
        path,
        "DELETE FROM segments WHERE id IN \
         (SELECT id FROM segments ORDER BY processed_at, id LIMIT ?1)",
        [n],
    )
}

/// Whether any segment is left: one probe, not a count.
fn has_segments(conn: &Connection, path: &Path) -> Result<bool, StoreError> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM segments)", [], |r| r.get(0))
        .map_err(|e| StoreError::sqlite(path, "retention: looking for segments", e))
}

fn segment_count(conn: &Connection, path: &Path) -> Result<u64, StoreError> {
    conn.query_row("SELECT count(*) FROM segments", [], |r| r.get(0))
        .map_err(|e| StoreError::sqlite(path, "retention: counting segments", e))
}

fn incremental_vacuum(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = |e| StoreError::sqlite(path, "retention: incremental vacuum", e);
    // The pragma frees one page per result row: stepping it once (as
    // execute_batch does) would free a single page.
    let mut st = conn.prepare("PRAGMA incremental_vacuum").map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    while rows.next().map_err(err)?.is_some() {}
    Ok(())
}

/// Frees at most `pages` free pages (moving pages from the end of the file into them).
fn incremental_vacuum_pages(conn: &Connection, path: &Path, pages: u64) -> Result<(), StoreError> {
    let err = |e| StoreError::sqlite(path, "retention: incremental vacuum", e);
    let mut st = conn
        .prepare(&format!("PRAGMA incremental_vacuum({pages})"))
        .map_err(err)?;
    let mut rows = st.query([]).map_err(err)?;
    while rows.next().map_err(err)?.is_some() {}
    Ok(())
}

fn checkpoint(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .map_err(|e| StoreError::sqlite(path, "retention: checkpointing the WAL", e))?;
    if busy != 0 {
        // A reader kept an old snapshot past the busy timeout. Not an error:
        // the file shrinks at a later checkpoint.
        tracing::debug!(path = %path.display(), "retention: WAL checkpoint could not finish; a reader is active");
    }
    Ok(())
}
