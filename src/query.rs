//! Query: read the tag log back and print it as an aligned table, JSON lines or CSV.
//!
//! Rules:
//! - Times given as a plain number or `h:m:s` are media time (seconds into the source);
//!   an RFC 3339 date (`2026-11-22T10:00:00Z`, UTC) or `@unix` is wall-clock time.
//! - Output formats carry the same fields; JSON and CSV are for machines, so no rounding there.

use std::io::Write;

use crate::store::{MatchRow, TimeBound};

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
            let mut widths = header.map(|h| h.chars().count());
            for row in &cells {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cols: &[String]| {
                cols.iter()
                    .zip(widths)
                    .enumerate()
                    .map(|(i, (c, w))| {
                        let pad = w - c.chars().count();
                        // Numbers right-aligned, text left-aligned; the last column is not padded.
                        if (1..=5).contains(&i) {
                            format!("{}{c}", " ".repeat(pad))
                        } else if i == cols.len() - 1 {
                            c.clone()
                        } else {
                            format!("{c}{}", " ".repeat(pad))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            writeln!(out, "{}", line(&header.map(String::from)))?;
            for row in &cells {
                writeln!(out, "{}", line(row))?;
            }
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
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv_field("dog"), "dog");
        assert_eq!(csv_field("a \"big\", dog"), "\"a \"\"big\"\", dog\"");
    }
}
