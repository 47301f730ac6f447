//! The read side of search: every stored window embedding of one model, streamed, and the
//! windows a search found, whole.
//!
//! Rules: embeddings are streamed into one reused buffer, never collected (10⁷ windows of
//! 512 floats are 20 GB); only the windows of the model asked for are read, and the count
//! of the others is reported, because cosines of two models cannot be compared.

use rusqlite::types::Value;
use rusqlite::OptionalExtension;

use super::blob::{blob_into_f32s, blob_to_f32s};

use super::error::StoreError;
use super::filter::Where;
use super::read::Store;
use super::records::{SegmentRow, WindowFilter};

impl Store {
    /// The models that have windows, oldest first (by when each was first seen), each with
    /// its recorded path. One index probe per model, not a count of every window.
    pub fn models_with_windows(&self) -> Result<Vec<(String, String)>, StoreError> {
        let err = |e| StoreError::sqlite(self.path(), "listing models with windows", e);
        let mut st = self
            .conn()
            .prepare_cached(
                "SELECT m.id, m.path FROM models m WHERE EXISTS \
                 (SELECT 1 FROM segments s WHERE s.model_id = m.id) ORDER BY m.first_seen, m.id",
            )
            .map_err(err)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    /// How many windows `model_id` has.
    pub fn windows_of_model(&self, model_id: &str) -> Result<u64, StoreError> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM segments WHERE model_id = ?1",
                [model_id],
                |r| r.get(0),
            )
            .map_err(|e| StoreError::sqlite(self.path(), "counting a model's windows", e))
    }

    /// Calls `each(id, embedding)` for every window of `model_id` that `filter` picks;
    /// returns how many there were.
    pub fn scan_embeddings(
        &self,
        model_id: &str,
        filter: &WindowFilter,
        mut each: impl FnMut(i64, &[f32]),
    ) -> Result<u64, StoreError> {
        let err = |e| StoreError::sqlite(self.path(), "scanning window embeddings", e);
        let w = picked(model_id, filter);
        let mut st = self
            .conn()
            .prepare(&format!(
                "SELECT s.id, s.embedding FROM segments s JOIN sources so ON so.id = s.source_id{}",
                w.sql
            ))
            .map_err(err)?;
        let mut rows = st.query(rusqlite::params_from_iter(w.args)).map_err(err)?;
        let mut buffer: Vec<f32> = Vec::new();
        let mut count = 0;
        while let Some(row) = rows.next().map_err(err)? {
            let id: i64 = row.get(0).map_err(err)?;
            let bad = |e: &dyn std::fmt::Display| {
                StoreError::bad_data(self.path(), format!("embedding of segment {id}: {e}"))
            };
            let blob = row
                .get_ref(1)
                .map_err(err)?
                .as_blob()
                .map_err(|e| bad(&e))?;
            blob_into_f32s(blob, &mut buffer).map_err(|e| bad(&e))?;
            each(id, &buffer);
            count += 1;
        }
        Ok(count)
    }

    /// Windows of `model_id` after `after_id` whose matches were not scored by the label set
    /// `label_set`, oldest id first, at most `limit`: a backfill's next chunk.
    pub fn windows_to_rescore(
        &self,
        model_id: &str,
        label_set: &str,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<f32>)>, StoreError> {
        let err = |e| StoreError::sqlite(self.path(), "reading windows to rescore", e);
        let mut st = self
            .conn()
            .prepare_cached(
                "SELECT s.id, s.embedding FROM segments s \
                 LEFT JOIN scored_by b ON b.segment_id = s.id \
                 WHERE s.model_id = ?1 AND s.id > ?2 AND b.label_set IS NOT ?3 \
                 ORDER BY s.id LIMIT ?4",
            )
            .map_err(err)?;
        let rows = st
            .query_map(
                rusqlite::params![model_id, after_id, label_set, limit as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
            )
            .map_err(err)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, blob) = row.map_err(err)?;
            let e = blob_to_f32s(&blob).map_err(|e| {
                StoreError::bad_data(self.path(), format!("embedding of segment {id}: {e}"))
            })?;
            out.push((id, e));
        }
        Ok(out)
    }

    /// The keyframe embeddings stored for the windows with ids in `first..=last` (windows
    /// tagged under `aggregate = "max"`), by window, in keyframe order.
    pub fn keyframe_embeddings_between(
        &self,
        first: i64,
        last: i64,
    ) -> Result<std::collections::HashMap<i64, Vec<Vec<f32>>>, StoreError> {
        let err = |e| StoreError::sqlite(self.path(), "reading keyframe embeddings", e);
        let mut st = self
            .conn()
            .prepare_cached(
                "SELECT segment_id, embedding FROM keyframe_embeddings \
                 WHERE segment_id BETWEEN ?1 AND ?2 ORDER BY segment_id, keyframe",
            )
            .map_err(err)?;
        let mut rows = st.query([first, last]).map_err(err)?;
        let mut out: std::collections::HashMap<i64, Vec<Vec<f32>>> = Default::default();
        while let Some(row) = rows.next().map_err(err)? {
            let id: i64 = row.get(0).map_err(err)?;
            let blob = row.get_ref(1).map_err(err)?.as_blob().map_err(|e| {
                StoreError::bad_data(self.path(), format!("keyframe of segment {id}: {e}"))
            })?;
            out.entry(id)
                .or_default()
                .push(blob_to_f32s(blob).map_err(|e| {
                    StoreError::bad_data(self.path(), format!("keyframe of segment {id}: {e}"))
                })?);
        }
        Ok(out)
    }

    /// How many windows of `model_id` were not scored by the label set `label_set`.
    pub fn windows_not_scored_by(
        &self,
        model_id: &str,
        label_set: &str,
    ) -> Result<u64, StoreError> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM segments s LEFT JOIN scored_by b ON b.segment_id = s.id \
                 WHERE s.model_id = ?1 AND b.label_set IS NOT ?2",
                rusqlite::params![model_id, label_set],
                |r| r.get(0),
            )
            .map_err(|e| StoreError::sqlite(self.path(), "counting windows to rescore", e))
    }

    /// The ids of the windows of `model_id` that `filter` picks.
    pub fn window_ids(
        &self,
        model_id: &str,
        filter: &WindowFilter,
    ) -> Result<Vec<i64>, StoreError> {
        let err = |e| StoreError::sqlite(self.path(), "listing windows", e);
        let w = picked(model_id, filter);
        let mut st = self
            .conn()
            .prepare(&format!(
                "SELECT s.id FROM segments s JOIN sources so ON so.id = s.source_id{}",
                w.sql
            ))
            .map_err(err)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(w.args), |r| r.get(0))
            .map_err(err)?;
        rows.collect::<Result<_, _>>().map_err(err)
    }

    /// The embeddings of these windows; ids no longer stored are left out.
    pub fn embeddings_by_id(&self, ids: &[i64]) -> Result<Vec<(i64, Vec<f32>)>, StoreError> {
        let err = |e| StoreError::sqlite(self.path(), "reading window embeddings", e);
        let mut st = self
            .conn()
            .prepare_cached("SELECT embedding FROM segments WHERE id = ?1")
            .map_err(err)?;
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let blob: Option<Vec<u8>> = st.query_row([id], |r| r.get(0)).optional().map_err(err)?;
            if let Some(blob) = blob {
                let e = blob_to_f32s(&blob).map_err(|e| {
                    StoreError::bad_data(self.path(), format!("embedding of segment {id}: {e}"))
                })?;
                out.push((id, e));
            }
        }
        Ok(out)
    }

    /// These windows, whole, in the order of `ids`; ids no longer stored are left out.
    pub fn segments_by_id(&self, ids: &[i64]) -> Result<Vec<SegmentRow>, StoreError> {
        let mut w = Where::new();
        w.any_of(
            ids.iter()
                .map(|&id| ("s.id = ?", Value::Integer(id)))
                .collect(),
        );
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = self.segments_where(w, "s.id")?;
        rows.sort_by_key(|r| ids.iter().position(|&id| id == r.id));
        Ok(rows)
    }
}

/// The WHERE clause for the windows of `model_id` that `filter` picks.
fn picked(model_id: &str, filter: &WindowFilter) -> Where {
    let mut w = Where::new();
    w.any_of(vec![("s.model_id = ?", Value::Text(model_id.to_string()))]);
    w.sources(&filter.sources);
    w.overlapping(filter.since, filter.until);
    if let Some(id) = filter.after_id {
        w.any_of(vec![("s.id > ?", Value::Integer(id))]);
    }
    w
}
