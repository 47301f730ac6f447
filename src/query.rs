//! Query: read the tag log (and the sources' states) back and print it as an
//! aligned table, JSON or CSV.
//!
//! Rules:
//! - Times given as a plain number or `h:m:s` are media time (seconds into the source);
//!   an RFC 3339 date (`2026-11-22T10:00:00Z`, UTC) or `@unix` is wall-clock time.
//! - Output formats carry the same fields; JSON and CSV are for machines, so no rounding there.
//! - The table is for people: source states show times as ages ("3s ago") and
//!   long reasons cut short; JSON and CSV keep unix seconds and the whole text.

use std::io::Write;

use crate::store::{MatchRow, SourceStateRecord, TimeBound};

/// Parse a `--since`/`--until` value.
pub fn parse_time_bound(value: &str) -> Result<TimeBound, String> {
    let v = value.trim();
    if let Some(unix) = v.strip_prefix('@') {
        return unix
            .parse::<f64>()
            .map(TimeBound::Wall)
            .map_err(|_| format!("{value:?}: expected @<unix seconds>"));
    }
    if v.contains('-') && v.len() >= 10 {
        let t = humantime::parse_rfc3339_weak(v.trim_end_matches('Z'))
            .map_err(|e| format!("{value:?}: not an RFC 3339 date/time ({e})"))?;
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs_f64();
        return Ok(TimeBound::Wall(secs));
    }
    let body = v.strip_suffix('s').unwrap_or(v);
    let mut total = 0.0;
    let parts: Vec<&str> = body.split(':').collect();
    if parts.len() > 3 {
        return Err(format!("{value:?}: expected seconds, m:s or h:m:s"));
    }
    for part in parts {
        let n: f64 = part.parse().map_err(|_| {
            format!("{value:?}: expected seconds, m:s, h:m:s, an RFC 3339 date or @unix")
        })?;
        if !(n.is_finite() && n >= 0.0) {
            return Err(format!("{value:?}: times cannot be negative"));
        }
        total = total * 60.0 + n;
    }
    Ok(TimeBound::Media(total))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

fn clock(seconds: f64) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}.{ms:03}")
    } else {
        format!("{m:02}:{s:02}.{ms:03}")
    }
}

fn wall(unix: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Aligned columns, two spaces apart; `right[i]` right-aligns column `i`
/// (numbers). The last column is not padded, so lines carry no trailing blanks.
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

pub fn write_rows(out: &mut dyn Write, rows: &[MatchRow], format: Format) -> std::io::Result<()> {
    match format {
        Format::Json => {
            for r in rows {
                serde_json::to_writer(&mut *out, r)?;
                writeln!(out)?;
            }
        }
        Format::Csv => {
            writeln!(
                out,
                "source,start_s,end_s,wall_time,rank,label,probability,cosine,model_id,segment_id"
            )?;
            for r in rows {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{}",
                    csv_field(&r.source),
                    r.start_s,
                    r.end_s,
                    wall(r.wall_time),
                    r.rank,
                    csv_field(&r.label),
                    r.probability,
                    r.cosine,
                    r.model_id,
                    r.segment_id
                )?;
            }
        }
        Format::Table => {
            let header = ["SOURCE", "START", "END", "RANK", "PROB", "COSINE", "LABEL"];
            let cells: Vec<[String; 7]> = rows
                .iter()
                .map(|r| {
                    [
                        r.source.clone(),
                        clock(r.start_s),
                        clock(r.end_s),
                        r.rank.to_string(),
                        format!("{:.3}", r.probability),
                        format!("{:.4}", r.cosine),
                        r.label.clone(),
                    ]
                })
                .collect();
            let right = [false, true, true, true, true, true, false];
            write_table(out, header, right, &cells)?;
        }
    }
    Ok(())
}

/// Longest reason the status table shows; the rest is in JSON and CSV.
const TABLE_REASON_CHARS: usize = 48;

/// How long before `now` the unix time `t` was, to the largest whole unit:
/// "3s ago", "2m ago", "5h ago", "3d ago". A time ahead of `now` by more
/// than a second (clocks of two boxes, or one stepped back) says so rather
/// than pretending it was "0s ago".
fn age(now: f64, t: Option<f64>) -> String {
    let Some(t) = t.filter(|t| t.is_finite() && now.is_finite()) else {
        return "-".into();
    };
    let d = now - t;
    let span = |secs: f64| {
        let s = secs.floor() as u64;
        match s {
            0..60 => format!("{s}s"),
            60..3600 => format!("{}m", s / 60),
            3600..86400 => format!("{}h", s / 3600),
            _ => format!("{}d", s / 86400),
        }
    };
    if d < -1.0 {
        format!("in {}", span(-d))
    } else {
        format!("{} ago", span(d.max(0.0)))
    }
}

/// One line, at most `max` characters, ending in "…" when cut; control
/// characters (a multi-line error) become spaces so the table stays a table.
fn table_reason(reason: Option<&str>, max: usize) -> String {
    let Some(r) = reason.filter(|r| !r.trim().is_empty()) else {
        return "-".into();
    };
    let one_line: String = r
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// `cliptag status`: the sources' latest states. `now` (unix seconds) is
/// what the table's ages are counted from.
pub fn write_source_states(
    out: &mut dyn Write,
    rows: &[SourceStateRecord],
    format: Format,
    now: f64,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, rows)?;
            writeln!(out)?;
        }
        Format::Csv => {
            writeln!(
                out,
                "name,uri,state,reason,last_frame_time,frames,frames_dropped,reconnects,updated_at"
            )?;
            for r in rows {
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{}",
                    csv_field(&r.name),
                    csv_field(&r.uri),
                    csv_field(&r.state),
                    r.reason.as_deref().map(csv_field).unwrap_or_default(),
                    r.last_frame_time.map(|t| t.to_string()).unwrap_or_default(),
                    r.frames,
                    r.frames_dropped,
                    r.reconnects,
                    r.updated_at
                )?;
            }
        }
        Format::Table => {
            let header = [
                "SOURCE",
                "STATE",
                "REASON",
                "LAST FRAME",
                "FRAMES",
                "DROPPED",
                "RECONNECTS",
                "UPDATED",
            ];
            let cells: Vec<[String; 8]> = rows
                .iter()
                .map(|r| {
                    [
                        r.name.clone(),
                        r.state.clone(),
                        table_reason(r.reason.as_deref(), TABLE_REASON_CHARS),
                        age(now, r.last_frame_time),
                        r.frames.to_string(),
                        r.frames_dropped.to_string(),
                        r.reconnects.to_string(),
                        age(now, Some(r.updated_at)),
                    ]
                })
                .collect();
            let right = [false, false, false, true, true, true, true, true];
            write_table(out, header, right, &cells)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds() {
        assert!(matches!(parse_time_bound("90"), Ok(TimeBound::Media(t)) if t == 90.0));
        assert!(matches!(parse_time_bound("1:30"), Ok(TimeBound::Media(t)) if t == 90.0));
        assert!(matches!(parse_time_bound("1:00:05s"), Ok(TimeBound::Media(t)) if t == 3605.0));
        assert!(matches!(parse_time_bound("@1700000000"), Ok(TimeBound::Wall(t)) if t == 1.7e9));
        assert!(
            matches!(parse_time_bound("2023-11-14T22:13:20Z"), Ok(TimeBound::Wall(t)) if t == 1.7e9)
        );
        assert!(parse_time_bound("yesterday").is_err());
        assert!(parse_time_bound("-5").is_err());
    }

    #[test]
    fn clock_format() {
        assert_eq!(clock(0.0), "00:00.000");
        assert_eq!(clock(70.25), "01:10.250");
        assert_eq!(clock(3725.0), "1:02:05.000");
    }

    #[test]
    fn ages_use_the_largest_whole_unit() {
        let now = 1_700_000_000.0;
        assert_eq!(age(now, None), "-");
        assert_eq!(age(now, Some(f64::NAN)), "-");
        assert_eq!(age(now, Some(now)), "0s ago");
        assert_eq!(age(now, Some(now - 3.9)), "3s ago");
        assert_eq!(age(now, Some(now - 59.99)), "59s ago");
        assert_eq!(age(now, Some(now - 60.0)), "1m ago");
        assert_eq!(age(now, Some(now - 150.0)), "2m ago");
        assert_eq!(age(now, Some(now - 3600.0)), "1h ago");
        assert_eq!(age(now, Some(now - 86399.0)), "23h ago");
        assert_eq!(age(now, Some(now - 3.0 * 86400.0)), "3d ago");
        // Sub-second skew is noise; more is worth showing.
        assert_eq!(age(now, Some(now + 0.5)), "0s ago");
        assert_eq!(age(now, Some(now + 120.0)), "in 2m");
    }

    #[test]
    fn reasons_are_cut_to_one_short_line_in_the_table() {
        assert_eq!(table_reason(None, 10), "-");
        assert_eq!(table_reason(Some("  "), 10), "-");
        assert_eq!(table_reason(Some("eof"), 10), "eof");
        assert_eq!(table_reason(Some("0123456789"), 10), "0123456789");
        assert_eq!(table_reason(Some("01234 6789ab"), 10), "01234 678…");
        // No blank before the ellipsis.
        assert_eq!(table_reason(Some("01234567 9ab"), 10), "01234567…");
        assert_eq!(
            table_reason(Some("line one\nline two"), 40),
            "line one line two"
        );
        assert_eq!(table_reason(Some("ééééééééééé"), 5), "éééé…");
    }

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
                updated_at: 880.0,
            },
        ]
    }

    fn render(format: Format) -> String {
        let mut out = Vec::new();
        write_source_states(&mut out, &states(), format, 1000.0).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn source_state_table() {
        let reason = format!("connection refused, \"retrying\" {}…", "x".repeat(16));
        let want = [
            "SOURCE  STATE        REASON".to_string()
                + &" ".repeat(reason.chars().count() - 6)
                + "  LAST FRAME  FRAMES  DROPPED  RECONNECTS  UPDATED",
            "door    streaming    -".to_string()
                + &" ".repeat(reason.chars().count() - 1)
                + "      2s ago   12345        7           1   0s ago",
            format!(
                "yard    backing off  {reason}           -       0        0          12   2m ago"
            ),
        ];
        assert_eq!(render(Format::Table), want.join("\n") + "\n");
        assert!(render(Format::Table).lines().all(|l| l == l.trim_end()));
    }

    #[test]
    fn source_state_json_and_csv_keep_everything() {
        let json: serde_json::Value = serde_json::from_str(&render(Format::Json)).unwrap();
        let rows = json.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["name"], "door");
        assert_eq!(rows[0]["last_frame_time"], 998.0);
        assert_eq!(rows[0]["frames_dropped"], 7);
        assert!(rows[0]["reason"].is_null());
        assert_eq!(rows[1]["reason"].as_str().unwrap().len(), 21 + 10 + 100);

        let csv = render(Format::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "name,uri,state,reason,last_frame_time,frames,frames_dropped,reconnects,updated_at"
        );
        assert_eq!(
            lines[1],
            "door,rtsp://***@10.0.0.7/stream,streaming,,998,12345,7,1,999.5"
        );
        // The quoted reason spans a line break, as CSV allows.
        assert!(lines[2].starts_with(
            "yard,rtsp://10.0.0.8/s,backing off,\"connection refused, \"\"retrying\"\""
        ));
        assert!(csv.ends_with(&format!("{}\",,0,0,12,880\n", "x".repeat(100))));
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("dog"), "dog");
        assert_eq!(csv_field("a \"big\", dog"), "\"a \"\"big\"\", dog\"");
    }
}
