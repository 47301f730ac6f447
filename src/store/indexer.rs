//! Keeping the search index (`codes.rs`) in step with `segments`, on the writer thread.
//!
//! Rules, and why:
//! - **After the commit, never inside it**: a batch is committed first and its codes
//!   appended after, so the index can only lag the database, never lead it. Failing to
//!   write the index is logged and never fails a batch: search falls back to scanning.
//! - **At start, repair, don't rebuild**: the file's ids are read and compared with the ids
//!   of the model's windows (one index scan, no embeddings); only the windows missing from
//!   the file — the batches a kill or a power cut left out — are read and appended.
//! - **The index follows the newest model**: once the model of the newest window has
//!   [`CENTRE_WINDOWS`] windows and the file is of another model (or there is none), the
//!   file is built anew for it, streaming the embeddings once.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{params, Connection};

use super::blob::blob_to_f32s;
use super::codes::{self, CodeSpace, CodeWriter, CENTRE_WINDOWS};
use super::ops::Op;

/// What the writer knows of the index file.
pub(super) struct Indexer {
    /// The file's header, when there is a file for the newest model.
    space: Option<CodeSpace>,
}

impl Indexer {
    /// Repairs (or builds) the file for the model of the newest window.
    pub(super) fn start(conn: &Connection, db: &Path) -> Indexer {
        let mut indexer = Indexer { space: None };
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
                if let Err(e) = codes::append(db, space, of_model) {
                    tracing::warn!(db = %db.display(), error = %e, "search index: cannot append; searches scan the windows it lacks");
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

/// Appends the model's windows the file lacks; returns how many.
fn repair(conn: &Connection, db: &Path, space: &CodeSpace) -> Result<u64, IndexError> {
    let have: HashSet<i64> = codes::read(db)
        .map(|c| c.ids().collect())
        .unwrap_or_default();
    let mut ids = conn.prepare("SELECT id FROM segments WHERE model_id = ?1 ORDER BY id")?;
    let missing: Vec<i64> = ids
        .query_map([&space.model_id], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?
        .into_iter()
        .filter(|id| !have.contains(id))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let mut one = conn.prepare_cached("SELECT embedding FROM segments WHERE id = ?1")?;
    let mut windows = Vec::with_capacity(missing.len().min(100_000));
    for chunk in missing.chunks(10_000) {
        windows.clear();
        for &id in chunk {
            let e: Vec<u8> = one.query_row([id], |r| r.get(0))?;
            windows.push((id, blob_to_f32s(&e).map_err(|_| IndexError::Blob)?));
        }
        codes::append(db, space, windows.iter().map(|(id, e)| (*id, e.as_slice())))?;
    }
    Ok(missing.len() as u64)
}
