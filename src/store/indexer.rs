//! Keeping the search index (`codes.rs`) in step with `segments`, on the writer thread.
//!
//! Rules, and why:
//! - **After the commit, never inside it**: a batch is committed first and its codes
//!   appended after, so the index can only lag the database, never lead it. Failing to
//!   write the index is logged and never fails a batch: search falls back to scanning.
//! - **At start, repair, don't rebuild**: the windows of the model after the file's last
//!   record — the batches a kill or a power cut left out — are read and appended. An
//!   append that fails is made good the same way at the next batch, so the file only
//!   ever lags at its end. (A window rewritten by a re-run keeps its id; if a kill comes
//!   between its commit and its append, its old code stays: it is still a candidate, by
//!   its old bits, and rescored by its true embedding.)
//! - **The index follows the newest model**: once the model of the newest window has
//!   [`CENTRE_WINDOWS`] windows and the file is of another model (or there is none), the
//!   file is built anew for it, streaming the embeddings once.

use std::path::Path;

use rusqlite::{params, Connection};

use super::blob::blob_to_f32s;
use super::codes::{self, CodeSpace, CodeWriter, CENTRE_WINDOWS};
use super::ops::Op;

/// What the writer knows of the index file.
pub(super) struct Indexer {
    /// The file's header, when there is a file for the newest model.
    space: Option<CodeSpace>,
    /// An append failed: the next batch repairs the file's end instead of appending.
    behind: bool,
}

impl Indexer {
    /// Repairs (or builds) the file for the model of the newest window.
    pub(super) fn start(conn: &Connection, db: &Path) -> Indexer {
        let mut indexer = Indexer {
            space: None,
            behind: false,
        };
        let Ok(Some(model)) = newest_model(conn) else {
            return indexer;
        };
        match codes::read_space(db) {
            Some(space) if space.model_id == model => match repair(conn, db, &space) {
                Ok(added) => {
                    if added > 0 {
                        tracing::info!(db = %db.display(), windows = added, "search index: added the windows it was missing");
                    }
                    indexer.space = Some(space);
                }
                Err(e) => {
                    tracing::warn!(db = %db.display(), error = %e, "search index not repaired; searches scan every window")
                }
            },
            _ => indexer.build_if_due(conn, db, &model),
        }
        indexer
    }

    /// Appends the codes of the segments a batch just committed.
    pub(super) fn after_batch(
        &mut self,
        conn: &Connection,
        db: &Path,
        ops: &[Op],
        written: &[(i64, usize)],
    ) {
        let segments: Vec<(i64, &str, &[f32])> = written
            .iter()
            .filter_map(|&(id, index)| match ops.get(index) {
                Some(Op::WriteSegment(s)) => {
                    Some((id, s.model_id.as_str(), s.embedding.as_slice()))
                }
                _ => None,
            })
            .collect();
        let Some(&(_, newest, _)) = segments.last() else {
            return;
        };
        match &self.space {
            Some(space) if space.model_id == newest => {
                let of_model = segments
                    .iter()
                    .filter(|(_, m, _)| *m == newest)
                    .map(|&(id, _, e)| (id, e));
                let done = if self.behind {
                    repair(conn, db, space).map(|_| ())
                } else {
                    codes::append(db, space, of_model).map_err(IndexError::from)
                };
                match done {
                    Ok(()) if self.behind => {
                        tracing::info!(db = %db.display(), "search index: caught up");
                        self.behind = false;
                    }
                    Ok(()) => {}
                    Err(e) if !self.behind => {
                        tracing::warn!(db = %db.display(), error = %e, "search index: cannot append; searches scan the windows it lacks, and the next batch tries again");
                        self.behind = true;
                    }
                    Err(_) => {}
                }
            }
            _ => {
                let model = newest.to_string();
                self.build_if_due(conn, db, &model);
            }
        }
    }

    fn build_if_due(&mut self, conn: &Connection, db: &Path, model: &str) {
        match build(conn, db, model) {
            Ok(Some((space, n))) => {
                tracing::info!(db = %db.display(), model, windows = n, "search index built");
                self.space = Some(space);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(db = %db.display(), error = %e, "search index not built; searches scan every window")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum IndexError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("a stored embedding is not a whole number of floats")]
    Blob,
}

fn newest_model(conn: &Connection) -> rusqlite::Result<Option<String>> {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT model_id FROM segments ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .optional()
}

/// A new file for `model` once it has enough windows for a centre; `None` before.
fn build(
    conn: &Connection,
    db: &Path,
    model: &str,
) -> Result<Option<(CodeSpace, u64)>, IndexError> {
    let mut first =
        conn.prepare("SELECT embedding FROM segments WHERE model_id = ?1 ORDER BY id LIMIT ?2")?;
    let mut centre: Vec<f32> = Vec::new();
    let mut n = 0usize;
    let mut rows = first.query(params![model, CENTRE_WINDOWS as i64])?;
    while let Some(row) = rows.next()? {
        let e = blob_to_f32s(row.get_ref(0)?.as_blob().map_err(|_| IndexError::Blob)?)
            .map_err(|_| IndexError::Blob)?;
        if centre.is_empty() {
            centre = vec![0.0; e.len()];
        }
        centre.iter_mut().zip(&e).for_each(|(c, x)| *c += x);
        n += 1;
    }
    if n < CENTRE_WINDOWS {
        return Ok(None);
    }
    centre.iter_mut().for_each(|c| *c /= n as f32);
    let space = CodeSpace {
        model_id: model.to_string(),
        centre,
    };
    let mut writer = CodeWriter::new(db, space.clone())?;
    let mut all =
        conn.prepare("SELECT id, embedding FROM segments WHERE model_id = ?1 ORDER BY id")?;
    let mut rows = all.query([model])?;
    while let Some(row) = rows.next()? {
        let e = blob_to_f32s(row.get_ref(1)?.as_blob().map_err(|_| IndexError::Blob)?)
            .map_err(|_| IndexError::Blob)?;
        writer.push(row.get(0)?, &e)?;
    }
    let n = writer.finish()?;
    Ok(Some((space, n)))
}

/// Appends the model's windows after the file's last record; returns how many. The file
/// can only lag at its end (appends follow commits in id order), so the ids past its last
/// are all it can lack: a start reads no more of the file than its last record.
fn repair(conn: &Connection, db: &Path, space: &CodeSpace) -> Result<u64, IndexError> {
    let last = codes::last_id(db).unwrap_or(0);
    let mut newer = conn.prepare(
        "SELECT id, embedding FROM segments WHERE model_id = ?1 AND id > ?2 ORDER BY id",
    )?;
    let mut rows = newer.query(params![space.model_id, last])?;
    let mut windows: Vec<(i64, Vec<f32>)> = Vec::new();
    let mut added = 0u64;
    loop {
        let row = rows.next()?;
        if let Some(row) = row {
            let e = blob_to_f32s(row.get_ref(1)?.as_blob().map_err(|_| IndexError::Blob)?)
                .map_err(|_| IndexError::Blob)?;
            windows.push((row.get(0)?, e));
        }
        if windows.len() == 10_000 || (row.is_none() && !windows.is_empty()) {
            codes::append(db, space, windows.iter().map(|(id, e)| (*id, e.as_slice())))?;
            added += windows.len() as u64;
            windows.clear();
        }
        if row.is_none() {
            return Ok(added);
        }
    }
}
