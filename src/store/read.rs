//! The read side: [`Store`] and its queries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::blob::blob_to_f32s;
use super::error::StoreError;
use super::records::{
    LabelRow, MatchQuery, MatchRow, ModelRecord, SegmentRow, SourceStateRecord, TimeBound,
};
use super::schema::{self, OpenMode};

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

const MATCH_COLUMNS: &str = "m.segment_id, so.name, s.start_ms, s.end_ms, s.wall_time, \
     l.text, m.rank, m.cosine, m.probability, s.model_id";
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

    /// Matches filtered by `q`, ordered by source, start, rank.
    pub fn query(&self, q: &MatchQuery) -> Result<Vec<MatchRow>, StoreError> {
        let err = self.err("querying matches");
        let mut sql = format!("SELECT {MATCH_COLUMNS} {MATCH_JOINS} WHERE 1");
        let mut args: Vec<Value> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: Value| {
            args.push(v);
            // Numbered so one value can appear twice in a clause.
            sql.push_str(&format!(
                " AND ({})",
                clause.replace('?', &format!("?{}", args.len()))
            ));
        };
        if let Some(label) = &q.label {
            let clause = if label.contains('%') {
                "l.text LIKE ?"
            } else {
                "l.text = ?"
            };
            arg(&mut sql, clause, Value::Text(label.clone()));
        }
        if let Some(source) = &q.source {
            arg(&mut sql, "so.name = ?", Value::Text(source.clone()));
        }
        match q.since {
            // Overlap with [since, ...): a window that started before `since`
            // but runs past it still shows what was on screen then. The
            // second test keeps zero-length windows exactly at `since`.
            Some(TimeBound::Media(s)) => arg(
                &mut sql,
                "s.end_ms > ? OR s.start_ms >= ?",
                Value::Integer(secs_to_ms(s)),
            ),
            Some(TimeBound::Wall(t)) => arg(&mut sql, "s.wall_time >= ?", Value::Real(t)),
            None => {}
        }
        match q.until {
            Some(TimeBound::Media(s)) => {
                arg(&mut sql, "s.start_ms < ?", Value::Integer(secs_to_ms(s)))
            }
            Some(TimeBound::Wall(t)) => arg(&mut sql, "s.wall_time < ?", Value::Real(t)),
            None => {}
        }
        if let Some(p) = q.min_probability {
            arg(&mut sql, "m.probability >= ?", Value::Real(f64::from(p)));
        }
        if q.top_only {
            sql.push_str(" AND m.rank = 1");
        }
        sql.push_str(" ORDER BY so.name, s.start_ms, s.model_id, m.rank");
        if let Some(limit) = q.limit {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut st = self.conn.prepare(&sql).map_err(&err)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), match_row)
            .map_err(&err)?;
        rows.collect::<Result<_, _>>().map_err(&err)
    }

    /// Segments of one source (or all), ordered by source then start time,
    /// each with its decoded embedding, keyframes and matches.
    pub fn segments(&self, source: Option<&str>) -> Result<Vec<SegmentRow>, StoreError> {
        let err = self.err("reading segments");
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT s.id, so.name, s.model_id, s.start_ms, s.end_ms, s.wall_time, \
                 s.frame_count, s.keyframes_ms, s.clip_calls, s.embedding \
                 FROM segments s JOIN sources so ON so.id = s.source_id \
                 WHERE ?1 IS NULL OR so.name = ?1 \
                 ORDER BY so.name, s.start_ms, s.model_id",
            )
            .map_err(&err)?;
        let raw = st
            .query_map(params![source], |r| {
                Ok((
                    SegmentRow {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        model_id: r.get(2)?,
                        start_ms: r.get(3)?,
                        end_ms: r.get(4)?,
                        wall_time: r.get(5)?,
                        frame_count: r.get(6)?,
                        keyframes_ms: Vec::new(),
                        clip_calls: r.get(8)?,
                        embedding: Vec::new(),
                        matches: Vec::new(),
                    },
                    r.get::<_, String>(7)?,
                    r.get::<_, Vec<u8>>(9)?,
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
        for (mut seg, keyframes, blob) in raw {
            seg.keyframes_ms = serde_json::from_str(&keyframes).map_err(|e| {
                StoreError::bad_data(&self.path, format!("keyframes of segment {}: {e}", seg.id))
            })?;
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
                 reconnects, updated_at FROM source_states ORDER BY name",
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
                    updated_at: r.get(8)?,
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

fn secs_to_ms(s: f64) -> i64 {
    // `as` saturates, which is the right answer for absurd bounds.
    (s * 1000.0).round() as i64
}

fn match_row(r: &Row<'_>) -> rusqlite::Result<MatchRow> {
    Ok(MatchRow {
        segment_id: r.get(0)?,
        source: r.get(1)?,
        start_s: r.get::<_, i64>(2)? as f64 / 1000.0,
        end_s: r.get::<_, i64>(3)? as f64 / 1000.0,
        wall_time: r.get(4)?,
        label: r.get(5)?,
        rank: r.get(6)?,
        cosine: r.get::<_, f64>(7)? as f32,
        probability: r.get::<_, f64>(8)? as f32,
        model_id: r.get(9)?,
    })
}
