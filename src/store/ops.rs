//! What each writer op does in SQL: validation against the model's embedding size, upserts
//! that make a re-run of a file replace its windows, and label sets kept for old matches.
//! Runs on the writer thread only, inside the batch's transaction (one savepoint per op).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::blob::f32s_to_blob;
use super::error::StoreError;
use super::records::{
    LabelRecord, ModelRecord, NewMatch, NewSegment, Rescored, SourceStateRecord, TaggedFile,
    SOURCE_STATES,
};

pub(super) enum Op {
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
    Rescore {
        model_id: String,
        label_set: String,
        windows: Vec<Rescored>,
    },
    MarkFileTagged(Box<TaggedFile>),
    PutSourceState(Box<SourceStateRecord>),
}

/// `now`: the writer's clock, for rows that record when they were first seen. Returns the
/// id of a segment written (for the search index), `None` for the other ops.
pub(super) fn apply(
    conn: &Connection,
    path: &Path,
    op: &Op,
    now: f64,
) -> Result<Option<i64>, StoreError> {
    match op {
        Op::RegisterModel(m) => register_model(conn, path, m, now).map(|()| None),
        Op::PutTextEmbeddings { model_id, items } => {
            put_text_embeddings(conn, path, model_id, items).map(|()| None)
        }
        Op::SetLabels { model_id, labels } => {
            set_labels(conn, path, model_id, labels).map(|()| None)
        }
        Op::WriteSegment(s) => write_segment(conn, path, s).map(Some),
        Op::Rescore {
            model_id,
            label_set,
            windows,
        } => rescore(conn, path, model_id, label_set, windows).map(|()| None),
        Op::MarkFileTagged(f) => mark_file_tagged(conn, path, f).map(|()| None),
        Op::PutSourceState(s) => put_source_state(conn, path, s).map(|()| None),
    }
}

fn register_model(
    conn: &Connection,
    path: &Path,
    m: &ModelRecord,
    now: f64,
) -> Result<(), StoreError> {
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
    .and_then(|mut st| st.execute(params![m.id, m.path, m.embedding_dim, now]))
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
    for (name, t) in [
        ("processed_at", s.processed_at),
        ("wall_start", s.wall_start),
        ("wall_end", s.wall_end),
    ] {
        if !t.is_finite() {
            return bad(format!("{name} {t}"));
        }
    }
    if s.wall_end < s.wall_start {
        return bad(format!(
            "wall-clock end {} before its start {}",
            s.wall_end, s.wall_start
        ));
    }
    check_dim(
        path,
        || format!("segment {}@{}ms embedding", s.source, s.start_ms),
        s.embedding.len(),
        dim,
    )?;
    for (i, e) in s.keyframe_embeddings.iter().enumerate() {
        check_dim(
            path,
            || {
                format!(
                    "segment {}@{}ms keyframe {i} embedding",
                    s.source, s.start_ms
                )
            },
            e.len(),
            dim,
        )?;
    }
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

fn write_segment(conn: &Connection, path: &Path, s: &NewSegment) -> Result<i64, StoreError> {
    let dim = require_model(conn, path, &s.model_id)?;
    validate_segment(path, s, dim)?;
    let ctx = || format!("writing segment {}@{}ms", s.source, s.start_ms);
    let err = |e| StoreError::sqlite(path, ctx(), e);

    // Resolve every label before writing anything, so an unknown one fails
    // the segment cleanly.
    let label_ids = resolve_labels(conn, path, &s.model_id, &s.matches, || {
        (s.source.clone(), s.start_ms)
    })?;

    // The source is its (name, location): another location under the same name is another
    // source, never a place to mix two videos' windows.
    let (recorded_at, recorded_from) = match s.recorded_at {
        Some((t, from)) => (Some(t), Some(from.as_str())),
        None => (None, None),
    };
    let source_id: i64 = conn
        .prepare_cached(
            "INSERT INTO sources (name, uri, kind, recorded_at, recorded_at_from) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (name, uri) DO UPDATE SET kind = excluded.kind, \
             recorded_at = coalesce(excluded.recorded_at, recorded_at), \
             recorded_at_from = coalesce(excluded.recorded_at_from, recorded_at_from) \
             RETURNING id",
        )
        .and_then(|mut st| {
            st.query_row(
                params![
                    s.source,
                    s.source_uri,
                    s.source_kind.as_str(),
                    recorded_at,
                    recorded_from
                ],
                |r| r.get(0),
            )
        })
        .map_err(err)?;

    let keyframes = serde_json::to_string(&s.keyframes_ms)
        .map_err(|e| StoreError::bad_data(path, format!("{}: keyframes: {e}", ctx())))?;
    // An upsert rather than INSERT OR REPLACE keeps the row id stable across
    // re-runs, so ids a user saw in earlier query output stay valid.
    let segment_id: i64 = conn
        .prepare_cached(
            "INSERT INTO segments (source_id, model_id, start_ms, end_ms, processed_at, \
             frame_count, keyframes_ms, clip_calls, embedding, wall_start, wall_end, \
             embedding_kind) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT (source_id, model_id, start_ms) DO UPDATE SET \
             end_ms = excluded.end_ms, processed_at = excluded.processed_at, \
             frame_count = excluded.frame_count, keyframes_ms = excluded.keyframes_ms, \
             clip_calls = excluded.clip_calls, embedding = excluded.embedding, \
             wall_start = excluded.wall_start, wall_end = excluded.wall_end, \
             embedding_kind = excluded.embedding_kind \
             RETURNING id",
        )
        .and_then(|mut st| {
            st.query_row(
                params![
                    source_id,
                    s.model_id,
                    s.start_ms,
                    s.end_ms,
                    s.processed_at,
                    s.frame_count,
                    keyframes,
                    s.clip_calls,
                    f32s_to_blob(&s.embedding),
                    s.wall_start,
                    s.wall_end,
                    s.embedding_kind.as_str()
                ],
                |r| r.get(0),
            )
        })
        .map_err(err)?;

    replace_matches(conn, segment_id, &s.matches, &label_ids).map_err(err)?;
    replace_keyframe_embeddings(conn, segment_id, &s.keyframe_embeddings).map_err(err)?;
    set_scored_by(conn, segment_id, s.label_set.as_deref()).map_err(err)?;
    Ok(segment_id)
}

/// A window's keyframe embeddings, replacing a re-run's (none under mean or grid).
fn replace_keyframe_embeddings(
    conn: &Connection,
    segment_id: i64,
    embeddings: &[Vec<f32>],
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM keyframe_embeddings WHERE segment_id = ?1")?
        .execute([segment_id])?;
    let mut st = conn.prepare_cached(
        "INSERT INTO keyframe_embeddings (segment_id, keyframe, embedding) VALUES (?1, ?2, ?3)",
    )?;
    for (i, e) in embeddings.iter().enumerate() {
        st.execute(params![segment_id, i as i64, f32s_to_blob(e)])?;
    }
    Ok(())
}

/// Records which label set scored a window's matches (none: not known).
fn set_scored_by(
    conn: &Connection,
    segment_id: i64,
    label_set: Option<&str>,
) -> rusqlite::Result<()> {
    match label_set {
        Some(set) => conn
            .prepare_cached(
                "INSERT INTO scored_by (segment_id, label_set) VALUES (?1, ?2) \
                 ON CONFLICT (segment_id) DO UPDATE SET label_set = excluded.label_set",
            )?
            .execute(params![segment_id, set]),
        None => conn
            .prepare_cached("DELETE FROM scored_by WHERE segment_id = ?1")?
            .execute([segment_id]),
    }
    .map(|_| ())
}

/// The label ids of `matches`, all of them known labels of the model, or the error that
/// names the first that is not (`at`: the window, for the message).
fn resolve_labels(
    conn: &Connection,
    path: &Path,
    model_id: &str,
    matches: &[NewMatch],
    at: impl Fn() -> (String, i64),
) -> Result<Vec<i64>, StoreError> {
    let err = |e| StoreError::sqlite(path, "resolving labels", e);
    let mut st = conn
        .prepare_cached("SELECT id FROM labels WHERE model_id = ?1 AND text = ?2")
        .map_err(err)?;
    let mut label_ids = Vec::with_capacity(matches.len());
    for m in matches {
        let id: Option<i64> = st
            .query_row(params![model_id, m.label], |r| r.get(0))
            .optional()
            .map_err(err)?;
        match id {
            Some(id) => label_ids.push(id),
            None => {
                let (source_name, start_ms) = at();
                return Err(StoreError::UnknownLabel {
                    path: path.to_path_buf(),
                    model_id: model_id.to_string(),
                    label: m.label.clone(),
                    source_name,
                    start_ms,
                });
            }
        }
    }
    Ok(label_ids)
}

fn replace_matches(
    conn: &Connection,
    segment_id: i64,
    matches: &[NewMatch],
    label_ids: &[i64],
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM matches WHERE segment_id = ?1")?
        .execute([segment_id])?;
    let mut st = conn.prepare_cached(
        "INSERT INTO matches (segment_id, label_id, rank, cosine, probability) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (m, label_id) in matches.iter().zip(label_ids) {
        st.execute(params![
            segment_id,
            label_id,
            m.rank,
            m.cosine,
            m.probability
        ])?;
    }
    Ok(())
}

/// A backfill's chunk: each window's matches replaced by the new label set's, and the window
/// marked as scored by it, in the one savepoint the op has (all of the chunk, or none).
/// A window gone meanwhile (retention) is skipped.
fn rescore(
    conn: &Connection,
    path: &Path,
    model_id: &str,
    label_set: &str,
    windows: &[Rescored],
) -> Result<(), StoreError> {
    let err = |e| StoreError::sqlite(path, format!("rescoring {} windows", windows.len()), e);
    let mut exists = conn
        .prepare_cached("SELECT 1 FROM segments WHERE id = ?1 AND model_id = ?2")
        .map_err(err)?;
    // A chunk has thousands of windows and a handful of labels: each label resolved once.
    let mut known: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for w in windows {
        let mut label_ids = Vec::with_capacity(w.matches.len());
        for m in &w.matches {
            let id = match known.get(&m.label) {
                Some(&id) => id,
                None => {
                    let id = resolve_labels(conn, path, model_id, std::slice::from_ref(m), || {
                        (format!("segment {}", w.segment_id), 0)
                    })?[0];
                    known.insert(m.label.clone(), id);
                    id
                }
            };
            label_ids.push(id);
        }
        if exists
            .exists(params![w.segment_id, model_id])
            .map_err(err)?
        {
            replace_matches(conn, w.segment_id, &w.matches, &label_ids).map_err(err)?;
            set_scored_by(conn, w.segment_id, Some(label_set)).map_err(err)?;
        }
    }
    Ok(())
}

/// Written after the file's last segment (the same queue keeps the order), so a file marked
/// tagged has every window in the database.
fn mark_file_tagged(conn: &Connection, path: &Path, f: &TaggedFile) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE sources SET file_size = ?3, file_mtime = ?4, tagged_with = ?5 \
         WHERE name = ?1 AND uri = ?2",
    )
    .and_then(|mut st| st.execute(params![f.source, f.uri, f.size, f.mtime, f.tagged_with]))
    .map_err(|e| StoreError::sqlite(path, format!("marking {} tagged", f.source), e))?;
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
         frames_dropped, reconnects, retries, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (name) DO UPDATE SET uri = excluded.uri, state = excluded.state, \
         reason = excluded.reason, last_frame_time = excluded.last_frame_time, \
         frames = excluded.frames, frames_dropped = excluded.frames_dropped, \
         reconnects = excluded.reconnects, retries = excluded.retries, \
         updated_at = excluded.updated_at",
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
            s.retries,
            s.updated_at
        ])
    })
    .map_err(|e| {
        StoreError::sqlite(path, format!("writing the state of source {:?}", s.name), e)
    })?;
    Ok(())
}
