//! Occurrences: back-to-back windows of one source where one label was found, merged into
//! "first seen – last seen", with the best score. What people mean by "when did a car show
//! up?"; the events of alerts are built on the same grouping.

use crate::store::MatchRow;

/// One stretch of time during which a source showed a label.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    pub source: String,
    pub uri: String,
    pub label: String,
    /// Wall-clock span, unix seconds: the first window's start, the last window's end.
    pub first_seen: f64,
    pub last_seen: f64,
    /// Position in the file, seconds (files only).
    pub offset: Option<(f64, f64)>,
    pub windows: usize,
    pub best_probability: f32,
    pub best_cosine: f32,
    /// The window with the best probability, to look at.
    pub best_segment_id: i64,
}

/// Merge `rows` (any order) into occurrences: rows of the same source and label whose
/// windows touch or overlap, or leave a gap of at most `max_gap` seconds, are one. Sorted
/// by first sighting.
pub fn occurrences(rows: &[MatchRow], max_gap: f64) -> Vec<Occurrence> {
    let mut sorted: Vec<&MatchRow> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        (a.source.as_str(), a.uri.as_str(), a.label.as_str())
            .cmp(&(b.source.as_str(), b.uri.as_str(), b.label.as_str()))
            .then(a.wall_start.total_cmp(&b.wall_start))
    });
    let mut out: Vec<Occurrence> = Vec::new();
    for r in sorted {
        if let Some(o) = out.last_mut().filter(|o| {
            o.source == r.source
                && o.uri == r.uri
                && o.label == r.label
                && r.wall_start <= o.last_seen + max_gap
        }) {
            o.last_seen = o.last_seen.max(r.wall_end);
            o.windows += 1;
            if let (Some((start, end)), Some((_, row_end))) = (o.offset, r.offset) {
                o.offset = Some((start, end.max(row_end)));
            }
            if r.probability > o.best_probability {
                o.best_probability = r.probability;
                o.best_segment_id = r.segment_id;
            }
            o.best_cosine = o.best_cosine.max(r.cosine);
            continue;
        }
        out.push(Occurrence {
            source: r.source.clone(),
            uri: r.uri.clone(),
            label: r.label.clone(),
            first_seen: r.wall_start,
            last_seen: r.wall_end,
            offset: r.offset,
            windows: 1,
            best_probability: r.probability,
            best_cosine: r.cosine,
            best_segment_id: r.segment_id,
        });
    }
    out.sort_by(|a, b| {
        a.first_seen
            .total_cmp(&b.first_seen)
            .then(a.source.cmp(&b.source))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::SourceKind;

    fn row(label: &str, start: f64, end: f64, p: f32) -> MatchRow {
        MatchRow {
            segment_id: start as i64,
            source: "cam".into(),
            uri: "rtsp://cam".into(),
            kind: SourceKind::Live,
            wall_start: start,
            wall_end: end,
            offset: None,
            processed_at: end,
            label: label.into(),
            rank: 1,
            cosine: p / 4.0,
            probability: p,
            model_id: "m".into(),
        }
    }

    #[test]
    fn back_to_back_windows_of_a_label_are_one_occurrence() {
        let rows = [
            row("car", 0.0, 10.0, 0.5),
            row("car", 10.0, 20.0, 0.9),
            row("dog", 10.0, 20.0, 0.4),
            row("car", 20.0, 30.0, 0.7),
            // A window missing: a second car.
            row("car", 40.0, 50.0, 0.6),
        ];
        let got = occurrences(&rows, 0.5);
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].label.as_str(), got[0].first_seen, got[0].last_seen),
            ("car", 0.0, 30.0)
        );
        assert_eq!((got[0].windows, got[0].best_probability), (3, 0.9));
        assert_eq!(got[0].best_segment_id, 10);
        assert_eq!((got[1].label.as_str(), got[1].windows), ("dog", 1));
        assert_eq!((got[2].first_seen, got[2].last_seen), (40.0, 50.0));
        // A gap allowance bridges the missing window.
        assert_eq!(occurrences(&rows, 10.0).len(), 2);
    }
}
