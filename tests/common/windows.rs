//! Test data made from real parts: clips of synthetic patterns rendered by the project's
//! script, and more windows made by copying windows the daemon really tagged.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::home::{text, Home};
use super::repo;

/// `patterns.mp4` in the box: one segment per (class, seconds), rendered by
/// scripts/make-synthetic-demo.sh (8 fps, 160×120 H.264).
pub fn render_patterns(home: &Home, layout: &[(&str, u32)]) -> PathBuf {
    let clip = home.path("patterns.mp4");
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/make-synthetic-demo.sh"))
        .arg(&clip);
    for (class, seconds) in layout {
        cmd.arg(format!("{class}:{seconds}"));
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    clip
}

/// Adds `copies` copies of every stored window, copy `n` with its columns moved by
/// `shift(column)` (an SQL expression in `n`, or `None` to keep the column): real
/// embeddings in more places, never made-up ones. Returns the windows stored after.
pub fn copy_windows(db: &Path, copies: u32, shift: impl Fn(&str) -> Option<String>) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    let columns: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('segments') WHERE name != 'id'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let shifted: Vec<String> = columns
        .iter()
        .map(|c| shift(c).unwrap_or_else(|| c.clone()))
        .collect();
    c.execute_batch(&format!(
        "WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < {copies}) \
         INSERT INTO segments ({}) SELECT {} FROM segments, k;",
        columns.join(", "),
        shifted.join(", ")
    ))
    .unwrap();
    c.query_row("SELECT count(*) FROM segments", [], |r| r.get(0))
        .unwrap()
}
