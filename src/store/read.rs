//! The read side: [`Store`] and its queries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::blob::blob_to_f32s;
use super::error::StoreError;
use super::filter::Where;
use super::records::{
    EmbeddingKind, LabelRow, MatchQuery, MatchRow, ModelRecord, SegmentRow, SourceStateRecord,
    TaggedFile,
};
use super::schema::{self, OpenMode};
use crate::ingest::SourceKind;

/// Read side + setup. Each `Store` has its own connection; under WAL it
/// reads a consistent snapshot while the writer keeps committing.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

const MATCH_COLUMNS: &str = "m.segment_id, so.name, s.start_ms, s.end_ms, s.processed_at, \
     l.text, m.rank, m.cosine, m.probability, s.model_id, so.uri, so.kind, s.wall_start, \
     s.wall_end";
const MATCH_JOINS: &str = "FROM matches m \
     JOIN segments s ON s.id = m.segment_id \
     JOIN sources so ON so.id = s.source_id \
     JOIN labels l ON l.id = m.label_id";

impl Store {
    /// Creates the file and its directory if needed, then migrates.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, OpenMode::Create)
    }

    /// Like [`Store::open`] but the file must exist; still migrates, since
    /// queries are written against the current schema.
    pub fn open_existing(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, OpenMode::Existing)
    }

    fn open_with(path: &Path, mode: OpenMode) -> Result<Store, StoreError> {
        let conn = schema::open(path, mode)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    fn err(&self, context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        let context = context.to_owned();
        move |e| StoreError::sqlite(&self.path, context.clone(), e)
    }

    pub fn models(&self) -> Result<Vec<ModelRecord>, StoreError> {
        let err = self.err("reading models");
        let mut st = self
            .conn
            .prepare_cached("SELECT id, path, embedding_dim FROM models ORDER BY first_seen, id")
            .map_err(&err)?;
        let rows = st
            .query_map([], |r| {
                Ok(ModelRecord {
                    id: r.get(0)?,
                    path: r.get(1)?,
                    embedding_dim: r.get(2)?,
                })
            })
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    /// Model ids that have segments, so the daemon can refuse to mix
    /// embeddings from different models in one database.
    pub fn models_with_segments(&self) -> Result<Vec<String>, StoreError> {
        let err = self.err("reading models with segments");
        // EXISTS per model walks the segments_by_model index instead of
        // scanning every segment for DISTINCT.
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT id FROM models m \
                 WHERE EXISTS (SELECT 1 FROM segments s WHERE s.model_id = m.id) ORDER BY id",
            )
            .map_err(&err)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    /// The cached embeddings among `texts`; missing ones are simply absent.
    pub fn cached_text_embeddings(
        &self,
        model_id: &str,
        texts: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, StoreError> {
        let err = self.err("reading cached text embeddings");
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT embedding FROM text_embeddings WHERE model_id = ?1 AND text = ?2",
            )
            .map_err(&err)?;
        let mut out = HashMap::with_capacity(texts.len());
        for t in texts {
            let blob: Option<Vec<u8>> = st
                .query_row(params![model_id, t], |r| r.get(0))
                .optional()
                .map_err(&err)?;
            if let Some(blob) = blob {
                let v = self.decode(&blob, || format!("cached embedding of {t:?}"))?;
                out.insert(t.clone(), v);
            }
        }
        Ok(out)
    }

    /// Labels of one model (or all), active first, then by text.
    pub fn labels(&self, model_id: Option<&str>) -> Result<Vec<LabelRow>, StoreError> {
        let err = self.err("reading labels");
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT model_id, text, prompts, active, length(embedding) / 4 FROM labels \
                 WHERE ?1 IS NULL OR model_id = ?1 ORDER BY model_id, active DESC, text",
            )
            .map_err(&err)?;
        let raw = st
            .query_map(params![model_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, usize>(4)?,
                ))
            })
            .map_err(&err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        let mut cached_st = self
            .conn
            .prepare_cached("SELECT 1 FROM text_embeddings WHERE model_id = ?1 AND text = ?2")
            .map_err(&err)?;
        let mut out = Vec::with_capacity(raw.len());
        for (model_id, text, prompts, active, embedding_dim) in raw {
            let prompts: Vec<String> = serde_json::from_str(&prompts).map_err(|e| {
                StoreError::bad_data(&self.path, format!("prompts of label {text:?}: {e}"))
            })?;
            let mut cached = true;
            for p in &prompts {
                if !cached_st.exists(params![model_id, p]).map_err(&err)? {
                    cached = false;
                    break;
                }
            }
            out.push(LabelRow {
                model_id,
                text,
                prompts,
                active,
                cached,
                embedding_dim,
            });
        }
        Ok(out)
    }

    /// Matches filtered by `q`, ordered by wall-clock start, source, rank; with a limit,
    /// the newest that many (still oldest first).
    pub fn query(&self, q: &MatchQuery) -> Result<Vec<MatchRow>, StoreError> {
        let err = self.err("querying matches");
        let mut w = Where::new();
        w.any_of(
            q.labels
                .iter()
                .map(|label| {
                    let clause = if label.contains('%') {
                        "l.text LIKE ?"
                    } else {
                        "l.text = ?"
                    };
                    (clause, Value::Text(label.clone()))
                })
                .collect(),
        );
        w.sources(&q.sources);
        w.overlapping(q.since, q.until);
        if let Some(p) = q.min_probability {
            w.any_of(vec![("m.probability >= ?", Value::Real(f64::from(p)))]);
        }
        if let Some(c) = q.min_cosine {
            w.any_of(vec![("m.cosine >= ?", Value::Real(f64::from(c)))]);
        }
        if q.top_only {
            w.sql.push_str(" AND m.rank = 1");
        }
        let mut sql = format!("SELECT {MATCH_COLUMNS} {MATCH_JOINS}{}", w.sql);
        let newest_first = q.limit.is_some();
        sql.push_str(if newest_first {
            " ORDER BY s.wall_start DESC, so.name DESC, so.uri DESC, s.model_id DESC, m.rank DESC"
        } else {
            " ORDER BY s.wall_start, so.name, so.uri, s.model_id, m.rank"
        });
        if let Some(limit) = q.limit {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut st = self.conn.prepare(&sql).map_err(&err)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(w.args), match_row)
            .map_err(&err)?;
        let mut rows: Vec<MatchRow> = rows.collect::<Result<_, _>>().map_err(&err)?;
        if newest_first {
            rows.reverse();
        }
        Ok(rows)
    }

    /// What the database recorded of a file source tagged to its end, if it was.
    pub fn tagged_file(&self, source: &str, uri: &str) -> Result<Option<TaggedFile>, StoreError> {
        let err = self.err("reading a tagged file");
        self.conn
            .prepare_cached(
                "SELECT file_size, file_mtime, tagged_with FROM sources \
                 WHERE name = ?1 AND uri = ?2 AND tagged_with IS NOT NULL",
            )
            .and_then(|mut st| {
                st.query_row(params![source, uri], |r| {
                    Ok(TaggedFile {
                        source: source.to_string(),
                        uri: uri.to_string(),
                        size: r.get(0)?,
                        mtime: r.get(1)?,
                        tagged_with: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(&err)
    }

    /// The names of every source with windows, and the texts of every label a window was
    /// ever matched with: what a query's filters may name.
    pub fn known_names(&self) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let err = self.err("listing sources and labels");
        let list = |sql: &str| -> Result<Vec<String>, StoreError> {
            let mut st = self.conn.prepare_cached(sql).map_err(&err)?;
            let rows = st.query_map([], |r| r.get(0)).map_err(&err)?;
            rows.collect::<Result<_, _>>().map_err(&err)
        };
        Ok((
            list("SELECT DISTINCT name FROM sources ORDER BY name")?,
            list("SELECT DISTINCT text FROM labels ORDER BY text")?,
        ))
    }

    /// Segments of one source (or all), ordered by source then start time,
    /// each with its decoded embedding, keyframes and matches.
    pub fn segments(&self, source: Option<&str>) -> Result<Vec<SegmentRow>, StoreError> {
        let mut w = Where::new();
        w.sources(&source.map(str::to_string).into_iter().collect::<Vec<_>>());
        self.segments_where(w, "so.name, s.start_ms, s.model_id")
    }

    /// Segments that `w` picks, in this order, each with its decoded embedding,
    /// keyframes and matches.
    pub(super) fn segments_where(
        &self,
        w: Where,
        order: &str,
    ) -> Result<Vec<SegmentRow>, StoreError> {
        let err = self.err("reading segments");
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT s.id, so.name, s.model_id, s.start_ms, s.end_ms, s.processed_at, \
                 s.frame_count, s.keyframes_ms, s.clip_calls, s.embedding, s.wall_start, \
                 s.wall_end, so.uri, so.kind, s.embedding_kind \
                 FROM segments s JOIN sources so ON so.id = s.source_id{} ORDER BY {order}",
                w.sql
            ))
            .map_err(&err)?;
        let raw = st
            .query_map(rusqlite::params_from_iter(w.args), |r| {
                Ok((
                    SegmentRow {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        uri: r.get(12)?,
                        kind: source_kind(&r.get::<_, String>(13)?),
                        model_id: r.get(2)?,
                        start_ms: r.get(3)?,
                        end_ms: r.get(4)?,
                        processed_at: r.get(5)?,
                        wall_start: r.get(10)?,
                        wall_end: r.get(11)?,
                        frame_count: r.get(6)?,
                        keyframes_ms: Vec::new(),
                        clip_calls: r.get(8)?,
                        embedding: Vec::new(),
                        // Placeholder until the keyframes are parsed (older windows).
                        embedding_kind: EmbeddingKind::Mean,
                        matches: Vec::new(),
                    },
                    r.get::<_, String>(7)?,
                    r.get::<_, Vec<u8>>(9)?,
                    r.get::<_, Option<String>>(14)?,
                ))
            })
            .map_err(&err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        let mut match_st = self
            .conn
            .prepare_cached(&format!(
                "SELECT {MATCH_COLUMNS} {MATCH_JOINS} WHERE m.segment_id = ?1 ORDER BY m.rank"
            ))
            .map_err(&err)?;
        let mut out = Vec::with_capacity(raw.len());
        for (mut seg, keyframes, blob, kind) in raw {
            seg.keyframes_ms = serde_json::from_str(&keyframes).map_err(|e| {
                StoreError::bad_data(&self.path, format!("keyframes of segment {}: {e}", seg.id))
            })?;
            seg.embedding_kind = match kind {
                None => EmbeddingKind::of_older_window(seg.clip_calls, seg.keyframes_ms.len()),
                Some(k) => EmbeddingKind::parse(&k).ok_or_else(|| {
                    StoreError::bad_data(
                        &self.path,
                        format!("segment {}: embedding kind {k:?}", seg.id),
                    )
                })?,
            };
            seg.embedding = self.decode(&blob, || format!("embedding of segment {}", seg.id))?;
            seg.matches = match_st
                .query_map([seg.id], match_row)
                .map_err(&err)?
                .collect::<Result<_, _>>()
                .map_err(&err)?;
            out.push(seg);
        }
        Ok(out)
    }

    /// The latest state of every source the daemon has reported, by name.
    pub fn source_states(&self) -> Result<Vec<SourceStateRecord>, StoreError> {
        let err = self.err("reading source states");
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT name, uri, state, reason, last_frame_time, frames, frames_dropped, \
                 reconnects, retries, updated_at FROM source_states ORDER BY name",
            )
            .map_err(&err)?;
        let rows = st
            .query_map([], |r| {
                Ok(SourceStateRecord {
                    name: r.get(0)?,
                    uri: r.get(1)?,
                    state: r.get(2)?,
                    reason: r.get(3)?,
                    last_frame_time: r.get(4)?,
                    frames: r.get(5)?,
                    frames_dropped: r.get(6)?,
                    reconnects: r.get(7)?,
                    retries: r.get(8)?,
                    updated_at: r.get(9)?,
                })
            })
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    pub fn segment_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM segments", [], |r| r.get(0))
            .map_err(self.err("counting segments"))
    }

    /// SQLite's own verdict: `"ok"`, or its list of problems one per line.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        let err = self.err("checking integrity");
        let mut st = self.conn.prepare("PRAGMA integrity_check").map_err(&err)?;
        let lines = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(&err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(&err)?;
        Ok(lines.join("\n"))
    }

    fn decode(&self, blob: &[u8], what: impl FnOnce() -> String) -> Result<Vec<f32>, StoreError> {
        blob_to_f32s(blob).map_err(|e| StoreError::bad_data(&self.path, format!("{}: {e}", what())))
    }
}

fn source_kind(kind: &str) -> SourceKind {
    if kind == "live" {
        SourceKind::Live
    } else {
        SourceKind::File
    }
}

fn match_row(r: &Row<'_>) -> rusqlite::Result<MatchRow> {
    Ok(MatchRow {
        segment_id: r.get(0)?,
        source: r.get(1)?,
        uri: r.get(10)?,
        kind: source_kind(&r.get::<_, String>(11)?),
        wall_start: r.get(12)?,
        wall_end: r.get(13)?,
        offset: (r.get::<_, String>(11)? == "file")
            .then(|| -> rusqlite::Result<(f64, f64)> {
                Ok((
                    r.get::<_, i64>(2)? as f64 / 1000.0,
                    r.get::<_, i64>(3)? as f64 / 1000.0,
                ))
            })
            .transpose()?,
        processed_at: r.get(4)?,
        label: r.get(5)?,
        rank: r.get(6)?,
        cosine: r.get::<_, f64>(7)? as f32,
        probability: r.get::<_, f64>(8)? as f32,
        model_id: r.get(9)?,
    })
}
