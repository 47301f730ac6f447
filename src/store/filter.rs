//! The WHERE clause of the readers that pick windows (`query`, `search`): sources and time
//! bounds, built once so both mean the same by `--source` and `--since`/`--until`.
//!
//! Rules: values are bound, never spliced into SQL; the aliases are `s` (segments) and
//! `so` (sources); windows that overlap `[since, until)` match (a window that began before
//! `since` but runs past it still shows what was on screen then), and a position in a
//! file (a media bound) keeps file windows only.

use rusqlite::types::Value;

use crate::times::TimeSpec;

/// A WHERE clause under construction and its bound values, in order.
pub(crate) struct Where {
    pub sql: String,
    pub args: Vec<Value>,
}

impl Where {
    pub fn new() -> Where {
        Where {
            sql: " WHERE 1".into(),
            args: Vec::new(),
        }
    }

    /// ANDs `(c1 OR c2 …)`; each clause's `?`s all take its one value.
    pub fn any_of(&mut self, clauses: Vec<(&str, Value)>) {
        if clauses.is_empty() {
            return;
        }
        let mut parts = Vec::new();
        for (clause, v) in clauses {
            self.args.push(v);
            // Numbered so one value can appear twice in a clause.
            parts.push(format!(
                "({})",
                clause.replace('?', &format!("?{}", self.args.len()))
            ));
        }
        self.sql.push_str(&format!(" AND ({})", parts.join(" OR ")));
    }

    /// Windows of any of these sources (none: every source).
    pub fn sources(&mut self, sources: &[String]) {
        self.any_of(
            sources
                .iter()
                .map(|source| ("so.name = ?", Value::Text(source.clone())))
                .collect(),
        );
    }

    /// Windows that overlap `[since, until)`.
    pub fn overlapping(&mut self, since: Option<TimeSpec>, until: Option<TimeSpec>) {
        match since {
            Some(TimeSpec::Media(t)) => self.any_of(vec![(
                "so.kind = 'file' AND (s.end_ms > ? OR s.start_ms >= ?)",
                Value::Integer(secs_to_ms(t)),
            )]),
            // The second test keeps zero-length windows exactly at `since`.
            Some(TimeSpec::Wall(t)) => self.any_of(vec![(
                "s.wall_end > ? OR s.wall_start >= ?",
                Value::Real(t),
            )]),
            None => {}
        }
        match until {
            Some(TimeSpec::Media(t)) => self.any_of(vec![(
                "so.kind = 'file' AND s.start_ms < ?",
                Value::Integer(secs_to_ms(t)),
            )]),
            Some(TimeSpec::Wall(t)) => self.any_of(vec![("s.wall_start < ?", Value::Real(t))]),
            None => {}
        }
    }
}

fn secs_to_ms(s: f64) -> i64 {
    // `as` saturates, which is the right answer for absurd bounds.
    (s * 1000.0).round() as i64
}
