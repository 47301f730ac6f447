//! Query: read the tag log (and the sources' states) back and print it for people (an
//! aligned table) or for programs (JSON lines, CSV).
//!
//! Rules:
//! - One time model everywhere (`times.rs`): tables show local wall-clock time in the box's
//!   zone, and a file's position for seeking; JSON and CSV carry each instant twice, RFC
//!   3339 with the offset and unix seconds, with the same field names in every command.
//! - `--json` is JSON lines in every command: one object per line, so `head -1` and `jq -c`
//!   work and a long answer streams.
//! - Tables never cut text short: a long reason is the last column, whole.
//! - [`occurrences`] merges back-to-back windows into first seen / last seen.

pub mod filters;
pub mod id_set;
pub mod occurrences;
pub mod search;

use std::io::Write;

use serde_json::{json, Value};

use crate::store::{MatchRow, SourceStateRecord};
use crate::times::{age, duration, offset, Zone};

pub use filters::{QueryFilters, WindowArgs, DEFAULT_MIN_PROBABILITY, OCCURRENCE_GAP};
pub use occurrences::{occurrences, Occurrence};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    /// JSON lines.
    Json,
    Csv,
}

impl Format {
    pub fn of(json: bool, csv: bool) -> Format {
        if json {
            Format::Json
        } else if csv {
            Format::Csv
        } else {
            Format::Table
        }
    }
}

/// An instant as every JSON object and CSV row carries it: `<name>` (RFC 3339 with the
/// zone's offset) and `<name>_unix`.
fn instant(fields: &mut Vec<(String, Value)>, name: &str, unix: Option<f64>, zone: &Zone) {
    fields.push((
        name.to_string(),
        unix.map_or(Value::Null, |t| Value::from(zone.rfc3339(t))),
    ));
    fields.push((
        format!("{name}_unix"),
        unix.map_or(Value::Null, |t| json!((t * 1000.0).round() / 1000.0)),
    ));
}

/// A row of named fields, written as one JSON line or one CSV record (header first).
struct Records {
    format: Format,
    header_written: bool,
}

impl Records {
    fn new(format: Format) -> Records {
        Records {
            format,
            header_written: false,
        }
    }

    fn write(&mut self, out: &mut dyn Write, fields: &[(String, Value)]) -> std::io::Result<()> {
        match self.format {
            Format::Json => {
                let object: serde_json::Map<String, Value> = fields.iter().cloned().collect();
                serde_json::to_writer(&mut *out, &object)?;
                writeln!(out)
            }
            Format::Csv => {
                if !self.header_written {
                    self.header_written = true;
                    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
                    writeln!(out, "{}", names.join(","))?;
                }
                let cells: Vec<String> = fields
                    .iter()
                    .map(|(_, v)| match v {
                        Value::Null => String::new(),
                        Value::String(s) => csv_field(s),
                        other => other.to_string(),
                    })
                    .collect();
                writeln!(out, "{}", cells.join(","))
            }
            Format::Table => Ok(()),
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Aligned columns, two spaces apart; `right[i]` right-aligns column `i` (numbers). The
/// last column is not padded, so lines carry no trailing blanks and a long last column
/// (a reason, a label) is never cut.
fn write_table<const N: usize>(
    out: &mut dyn Write,
    header: [&str; N],
    right: [bool; N],
    cells: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String; N]| {
        cols.iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = " ".repeat(w - c.chars().count());
                if right[i] {
                    format!("{pad}{c}")
                } else if i == N - 1 {
                    c.clone()
                } else {
                    format!("{c}{pad}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(&header.map(String::from)))?;
    for row in cells {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}

/// A wall-clock span for a table: the start with its date, the end as a time of day when
/// it falls on the same day.
fn span(zone: &Zone, start: f64, end: f64) -> (String, String) {
    let (a, b) = (zone.clock(start), zone.clock(end));
    let same_day = a.get(..10) == b.get(..10);
    (a, if same_day { b[11..].to_string() } else { b })
}

fn position(o: Option<(f64, f64)>) -> String {
    o.map_or("-".into(), |(a, b)| format!("{}–{}", offset(a), offset(b)))
}

fn span_fields(
    fields: &mut Vec<(String, Value)>,
    zone: &Zone,
    start: f64,
    end: f64,
    position: Option<(f64, f64)>,
) {
    instant(fields, "start", Some(start), zone);
    instant(fields, "end", Some(end), zone);
    fields.push((
        "offset_s".into(),
        position.map_or(Value::Null, |p| json!(p.0)),
    ));
    fields.push((
        "offset_end_s".into(),
        position.map_or(Value::Null, |p| json!(p.1)),
    ));
}

/// `cliptag query`: one row per stored match.
pub fn write_rows(
    out: &mut dyn Write,
    rows: &[MatchRow],
    format: Format,
    zone: &Zone,
) -> std::io::Result<()> {
    if format == Format::Table {
        let header = [
            "SOURCE", "START", "END", "POSITION", "PROB", "COSINE", "LABEL",
        ];
        let cells: Vec<[String; 7]> = rows
            .iter()
            .map(|r| {
                let (start, end) = span(zone, r.wall_start, r.wall_end);
                [
                    r.source.clone(),
                    start,
                    end,
                    position(r.offset),
                    format!("{:.3}", r.probability),
                    format!("{:.4}", r.cosine),
                    r.label.clone(),
                ]
            })
            .collect();
        let right = [false, false, false, false, true, true, false];
        return write_table(out, header, right, &cells);
    }
    let mut records = Records::new(format);
    for r in rows {
        let mut f: Vec<(String, Value)> = vec![
            ("source".into(), json!(r.source)),
            ("uri".into(), json!(r.uri)),
            ("kind".into(), json!(r.kind.as_str())),
        ];
        span_fields(&mut f, zone, r.wall_start, r.wall_end, r.offset);
        f.extend([
            ("label".to_string(), json!(r.label)),
            ("rank".to_string(), json!(r.rank)),
            ("probability".to_string(), json!(r.probability)),
            ("cosine".to_string(), json!(r.cosine)),
        ]);
        instant(&mut f, "processed_at", Some(r.processed_at), zone);
        f.extend([
            ("model_id".to_string(), json!(r.model_id)),
            ("segment_id".to_string(), json!(r.segment_id)),
        ]);
        records.write(out, &f)?;
    }
    Ok(())
}

/// How many of a window's labels a search hit shows, best first.
const HIT_LABELS: usize = 3;

/// `cliptag search`: one row per window found, best first, with its cosine to the query
/// and its own top labels, so the moment can be found and judged.
pub fn write_hits(
    out: &mut dyn Write,
    hits: &[search::Hit],
    format: Format,
    zone: &Zone,
) -> std::io::Result<()> {
    let top_labels = |h: &search::Hit| -> Vec<(String, f32)> {
        h.window
            .matches
            .iter()
            .take(HIT_LABELS)
            .map(|m| (m.label.clone(), m.probability))
            .collect()
    };
    if format == Format::Table {
        let header = [
            "ID", "SCORE", "SOURCE", "START", "END", "POSITION", "LABELS",
        ];
        let cells: Vec<[String; 7]> = hits
            .iter()
            .map(|h| {
                let (start, end) = span(zone, h.window.wall_start, h.window.wall_end);
                [
                    h.window.id.to_string(),
                    format!("{:.4}", h.score),
                    h.window.source.clone(),
                    start,
                    end,
                    position(h.window.offset()),
                    top_labels(h)
                        .iter()
                        .map(|(l, p)| format!("{l} {p:.2}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect();
        let right = [true, true, false, false, false, false, false];
        return write_table(out, header, right, &cells);
    }
    let mut records = Records::new(format);
    for h in hits {
        let mut f: Vec<(String, Value)> = vec![
            ("segment_id".into(), json!(h.window.id)),
            ("score".into(), json!(h.score)),
            ("source".into(), json!(h.window.source)),
            ("uri".into(), json!(h.window.uri)),
            ("kind".into(), json!(h.window.kind.as_str())),
        ];
        span_fields(
            &mut f,
            zone,
            h.window.wall_start,
            h.window.wall_end,
            h.window.offset(),
        );
        let labels = top_labels(h);
        match format {
            // One cell: "label 0.87; label 0.05".
            Format::Csv => f.push((
                "labels".into(),
                json!(labels
                    .iter()
                    .map(|(l, p)| format!("{l} {p:.3}"))
                    .collect::<Vec<_>>()
                    .join("; ")),
            )),
            _ => f.push((
                "labels".into(),
                json!(labels
                    .iter()
                    .map(|(l, p)| json!({"label": l, "probability": p}))
                    .collect::<Vec<_>>()),
            )),
        }
        f.push(("model_id".into(), json!(h.window.model_id)));
        // What the score was taken against: the window's keyframes' mean, a grid image,
        // or an earlier window's embedding reused for an unchanged scene.
        f.push(("embedding".into(), json!(h.window.embedding_kind.as_str())));
        records.write(out, &f)?;
    }
    Ok(())
}

/// `cliptag query --group`: one row per occurrence.
pub fn write_occurrences(
    out: &mut dyn Write,
    found: &[Occurrence],
    format: Format,
    zone: &Zone,
) -> std::io::Result<()> {
    if format == Format::Table {
        let header = [
            "SOURCE",
            "FIRST SEEN",
            "LAST SEEN",
            "POSITION",
            "WINDOWS",
            "BEST",
            "LABEL",
        ];
        let cells: Vec<[String; 7]> = found
            .iter()
            .map(|o| {
                let (first, last) = span(zone, o.first_seen, o.last_seen);
                [
                    o.source.clone(),
                    first,
                    last,
                    position(o.offset),
                    o.windows.to_string(),
                    format!("{:.3}", o.best_probability),
                    o.label.clone(),
                ]
            })
            .collect();
        let right = [false, false, false, false, true, true, false];
        return write_table(out, header, right, &cells);
    }
    let mut records = Records::new(format);
    for o in found {
        let mut f: Vec<(String, Value)> = vec![
            ("source".into(), json!(o.source)),
            ("uri".into(), json!(o.uri)),
            ("label".into(), json!(o.label)),
        ];
        span_fields(&mut f, zone, o.first_seen, o.last_seen, o.offset);
        f.extend([
            ("windows".to_string(), json!(o.windows)),
            ("best_probability".to_string(), json!(o.best_probability)),
            ("best_cosine".to_string(), json!(o.best_cosine)),
            ("best_segment_id".to_string(), json!(o.best_segment_id)),
        ]);
        records.write(out, &f)?;
    }
    Ok(())
}

/// How long a live source's recorded state may go unrefreshed before the daemon that wrote
/// it is taken for gone: three of its refresh periods (it rewrites every state every 5 s).
pub const STALE_AFTER: f64 = 15.0;

/// The state to show: the recorded one, or "stale" when the daemon stopped refreshing a
/// state that only a running daemon can be in.
fn shown_state(r: &SourceStateRecord, now: f64) -> (String, bool) {
    let settled = matches!(r.state.as_str(), "finished" | "failed" | "stopped");
    let stale = !settled && now - r.updated_at > STALE_AFTER;
    if stale {
        ("stale".into(), true)
    } else {
        (r.state.clone(), false)
    }
}

/// `cliptag status`: the sources' latest states. `now` (unix seconds) is what ages and
/// staleness are counted from.
pub fn write_source_states(
    out: &mut dyn Write,
    rows: &[SourceStateRecord],
    format: Format,
    now: f64,
    zone: &Zone,
) -> std::io::Result<()> {
    if format == Format::Table {
        let header = [
            "SOURCE",
            "STATE",
            "LAST FRAME",
            "FRAMES",
            "DROPPED",
            "RECONNECTS",
            "RETRIES",
            "UPDATED",
            "REASON",
        ];
        let cells: Vec<[String; 9]> = rows
            .iter()
            .map(|r| {
                let (state, stale) = shown_state(r, now);
                let reason = if stale {
                    format!(
                        "no word from the daemon for {} (it was {}): is it running?",
                        duration(now - r.updated_at),
                        r.state
                    )
                } else {
                    one_line(r.reason.as_deref())
                };
                [
                    r.name.clone(),
                    state,
                    r.last_frame_time.map_or("-".into(), |t| age(now - t)),
                    r.frames.to_string(),
                    r.frames_dropped.to_string(),
                    r.reconnects.to_string(),
                    r.retries.to_string(),
                    age(now - r.updated_at),
                    reason,
                ]
            })
            .collect();
        let right = [false, false, true, true, true, true, true, true, false];
        return write_table(out, header, right, &cells);
    }
    let mut records = Records::new(format);
    for r in rows {
        let (state, stale) = shown_state(r, now);
        let mut f: Vec<(String, Value)> = vec![
            ("source".into(), json!(r.name)),
            ("uri".into(), json!(r.uri)),
            ("state".into(), json!(state)),
            ("stale".into(), json!(stale)),
            ("recorded_state".into(), json!(r.state)),
            ("reason".into(), json!(r.reason)),
        ];
        instant(&mut f, "last_frame", r.last_frame_time, zone);
        f.extend([
            ("frames".to_string(), json!(r.frames)),
            ("frames_dropped".to_string(), json!(r.frames_dropped)),
            ("reconnects".to_string(), json!(r.reconnects)),
            ("retries".to_string(), json!(r.retries)),
        ]);
        instant(&mut f, "updated", Some(r.updated_at), zone);
        records.write(out, &f)?;
    }
    Ok(())
}

/// A reason on one line (control characters become spaces), whole; `-` when none.
fn one_line(reason: Option<&str>) -> String {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        None => "-".into(),
        Some(r) => r
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::SourceKind;

    fn states() -> Vec<SourceStateRecord> {
        vec![
            SourceStateRecord {
                name: "door".into(),
                uri: "rtsp://***@10.0.0.7/stream".into(),
                state: "streaming".into(),
                reason: None,
                last_frame_time: Some(998.0),
                frames: 12345,
                frames_dropped: 7,
                reconnects: 1,
                retries: 3,
                updated_at: 999.5,
            },
            SourceStateRecord {
                name: "yard".into(),
                uri: "rtsp://10.0.0.8/s".into(),
                state: "backing off".into(),
                reason: Some(format!(
                    "connection refused, \"retrying\"\n{}",
                    "x".repeat(100)
                )),
                last_frame_time: None,
                frames: 0,
                frames_dropped: 0,
                reconnects: 12,
                retries: 40,
                updated_at: 880.0,
            },
        ]
    }

    fn render(format: Format) -> String {
        let mut out = Vec::new();
        write_source_states(&mut out, &states(), format, 1000.0, &Zone::utc()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn source_state_table_keeps_whole_reasons_and_says_stale() {
        let table = render(Format::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("SOURCE  STATE"), "{table}");
        assert!(lines[0].ends_with("REASON"), "{table}");
        assert!(lines[1].starts_with("door    streaming"), "{table}");
        assert!(lines[1].ends_with("  -"), "{table}");
        // Two minutes without a refresh: the daemon is gone, whatever the row says.
        assert!(lines[2].starts_with("yard    stale"), "{table}");
        assert!(
            lines[2].contains("no word from the daemon for 2m (it was backing off)"),
            "{table}"
        );
        assert!(table.lines().all(|l| l == l.trim_end()));
    }

    #[test]
    fn source_state_json_lines_and_csv_keep_everything() {
        let json = render(Format::Json);
        let rows: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["source"], "door");
        assert_eq!(rows[0]["last_frame"], "1970-01-01T00:16:38.000+00:00");
        assert_eq!(rows[0]["last_frame_unix"], 998.0);
        assert_eq!(rows[0]["frames_dropped"], 7);
        assert_eq!(rows[0]["stale"], false);
        assert!(rows[0]["reason"].is_null());
        assert_eq!(rows[1]["state"], "stale");
        assert_eq!(rows[1]["recorded_state"], "backing off");
        assert_eq!(rows[1]["reason"].as_str().unwrap().len(), 21 + 10 + 100);

        let csv = render(Format::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "source,uri,state,stale,recorded_state,reason,last_frame,last_frame_unix,frames,frames_dropped,reconnects,retries,updated,updated_unix"
        );
        assert_eq!(
            lines[1],
            "door,rtsp://***@10.0.0.7/stream,streaming,false,streaming,,1970-01-01T00:16:38.000+00:00,998.0,12345,7,1,3,1970-01-01T00:16:39.500+00:00,999.5"
        );
        // The quoted reason spans a line break, as CSV allows.
        assert!(lines[2].starts_with(
            "yard,rtsp://10.0.0.8/s,stale,true,backing off,\"connection refused, \"\"retrying\"\""
        ));
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("dog"), "dog");
        assert_eq!(csv_field("a \"big\", dog"), "\"a \"\"big\"\", dog\"");
    }

    #[test]
    fn match_rows_show_wall_time_and_a_files_position() {
        let berlin = Zone::named("Europe/Berlin").unwrap();
        let rows = [
            MatchRow {
                segment_id: 7,
                source: "clip".into(),
                uri: "/v/a.mp4".into(),
                kind: SourceKind::File,
                wall_start: 1_796_644_800.0,
                wall_end: 1_796_644_810.0,
                offset: Some((70.0, 80.0)),
                processed_at: 1_796_700_000.0,
                label: "dog".into(),
                rank: 1,
                cosine: 0.25,
                probability: 0.875,
                model_id: "m".into(),
            },
            MatchRow {
                segment_id: 8,
                source: "cam".into(),
                uri: "rtsp://cam".into(),
                kind: SourceKind::Live,
                wall_start: 1_796_644_800.0,
                wall_end: 1_796_644_810.0,
                offset: None,
                processed_at: 1_796_644_811.0,
                label: "a red car".into(),
                rank: 2,
                cosine: 0.5,
                probability: 0.125,
                model_id: "m".into(),
            },
        ];
        let mut out = Vec::new();
        write_rows(&mut out, &rows, Format::Table, &berlin).unwrap();
        let table = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1],
            "clip    2026-12-07 13:00:00  13:00:10  01:10.000–01:20.000  0.875  0.2500  dog"
        );
        assert_eq!(
            lines[2],
            "cam     2026-12-07 13:00:00  13:00:10  -                    0.125  0.5000  a red car"
        );
        let mut out = Vec::new();
        write_rows(&mut out, &rows, Format::Json, &berlin).unwrap();
        let json: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(json[0]["start"], "2026-12-07T13:00:00.000+01:00");
        assert_eq!(json[0]["start_unix"], 1_796_644_800.0);
        assert_eq!(json[0]["offset_s"], 70.0);
        assert!(json[1]["offset_s"].is_null());
        assert_eq!(json[1]["kind"], "live");
    }
}
