//! What `cliptag query` may ask, checked against the database before anything is read: a
//! label or source the log never saw, a probability outside [0, 1] or an empty time range
//! is an error that lists what would work, never a silently empty answer.

use crate::store::{MatchQuery, WindowFilter};
use crate::times::{parse_time, TimeSpec, Zone};

/// Rows below this probability are not shown unless `--min-prob` asks for them: a softmax
/// over many labels gives every window a long tail of near-zero rows that answer nothing.
pub const DEFAULT_MIN_PROBABILITY: f32 = 0.01;

/// Seconds between two windows of one label that still count as one occurrence.
pub const OCCURRENCE_GAP: f64 = 1.0;

/// Which windows, by source and time: what `query` and `search` both filter by, meaning the
/// same in both.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WindowArgs {
    /// Only this source (repeat for several)
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// From: a position in a file (90, 1:30), or a time: 2026-12-07, "2026-12-07 14:00",
    /// 2026-12-07T14:00:00+01:00, @unix, today, yesterday, 1h, 2d (ago)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Until (exclusive), in the same forms as --since
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

impl WindowArgs {
    /// The windows these arguments pick; `known_sources` is what the database holds.
    pub fn to_filter(
        &self,
        known_sources: &[String],
        now: f64,
        zone: &Zone,
    ) -> Result<WindowFilter, String> {
        check_sources(&self.sources, known_sources)?;
        let (since, until) = time_range(&self.since, &self.until, now, zone)?;
        Ok(WindowFilter {
            sources: self.sources.clone(),
            since,
            until,
            after_id: None,
        })
    }
}

/// The query's filters as the command line gives them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QueryFilters {
    /// Only this label (repeat for several); a SQL LIKE pattern when it contains %
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub window: WindowArgs,
    /// Least probability to show, 0 to 1 [default: 0.01]
    #[arg(long, value_name = "P")]
    pub min_prob: Option<f32>,
    /// Least cosine similarity to show, -1 to 1
    #[arg(long, value_name = "C")]
    pub min_cosine: Option<f32>,
    /// Show only the newest N rows (still oldest first)
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Only each window's best label
    #[arg(long)]
    pub top: bool,
}

impl QueryFilters {
    /// The store query these filters mean. `known` is what the database holds (source names,
    /// label texts); `now` and `zone` anchor the time forms.
    pub fn to_query(
        &self,
        known: &(Vec<String>, Vec<String>),
        now: f64,
        zone: &Zone,
    ) -> Result<MatchQuery, String> {
        let (sources, labels) = known;
        for label in self.labels.iter().filter(|l| !l.contains('%')) {
            if !labels.contains(label) {
                return Err(unknown("label", label, labels));
            }
        }
        let window = self.window.to_filter(sources, now, zone)?;
        if let Some(p) = self.min_prob {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "--min-prob {p}: a probability is between 0 and 1 (0.5, not 50)"
                ));
            }
        }
        if let Some(c) = self.min_cosine {
            if !(-1.0..=1.0).contains(&c) {
                return Err(format!("--min-cosine {c}: a cosine is between -1 and 1"));
            }
        }
        if self.limit == Some(0) {
            return Err("--limit 0 shows nothing; give at least 1".into());
        }
        Ok(MatchQuery {
            labels: self.labels.clone(),
            sources: window.sources,
            since: window.since,
            until: window.until,
            min_probability: Some(self.min_prob.unwrap_or(DEFAULT_MIN_PROBABILITY)),
            min_cosine: self.min_cosine,
            limit: self.limit,
            top_only: self.top,
        })
    }
}

/// Every named source must be one the database knows.
pub(crate) fn check_sources(named: &[String], known: &[String]) -> Result<(), String> {
    match named.iter().find(|s| !known.contains(s)) {
        Some(source) => Err(unknown("source", source, known)),
        None => Ok(()),
    }
}

/// `--since` and `--until` as bounds, refused when the range they make is empty.
pub(crate) fn time_range(
    since: &Option<String>,
    until: &Option<String>,
    now: f64,
    zone: &Zone,
) -> Result<(Option<TimeSpec>, Option<TimeSpec>), String> {
    let time = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| parse_time(v, now, zone).map_err(|e| format!("--{flag} {e}")))
            .transpose()
    };
    let (a, b) = (time("since", since)?, time("until", until)?);
    match (a, b) {
        (Some(TimeSpec::Media(x)), Some(TimeSpec::Media(y)))
        | (Some(TimeSpec::Wall(x)), Some(TimeSpec::Wall(y)))
            if y <= x =>
        {
            Err(format!(
                "--since {:?} is not before --until {:?}: the range is empty",
                since.as_deref().unwrap_or_default(),
                until.as_deref().unwrap_or_default()
            ))
        }
        _ => Ok((a, b)),
    }
}

/// "unknown label "Car" (did you mean "car"?); the log has: car, dog, person".
fn unknown(what: &str, name: &str, known: &[String]) -> String {
    let near = known
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map(|k| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default();
    if known.is_empty() {
        return format!("unknown {what} {name:?}: the database holds no {what}s yet");
    }
    format!(
        "unknown {what} {name:?}{near}; the database knows: {}",
        known.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> (Vec<String>, Vec<String>) {
        (
            vec!["cam".into(), "door".into()],
            vec!["car".into(), "dog".into()],
        )
    }

    fn check(f: QueryFilters) -> Result<MatchQuery, String> {
        f.to_query(&known(), 1_796_644_800.0, &Zone::utc())
    }

    #[test]
    fn unknown_names_and_ranges_are_refused_with_what_works() {
        let e = check(QueryFilters {
            labels: vec!["Car".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.contains("\"Car\"") && e.contains("did you mean \"car\"") && e.contains("dog"),
            "{e}"
        );
        let e = check(QueryFilters {
            window: WindowArgs {
                sources: vec!["nosuch".into()],
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("cam, door"), "{e}");
        let e = check(QueryFilters {
            min_prob: Some(50.0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("between 0 and 1"), "{e}");
        let e = check(QueryFilters {
            window: WindowArgs {
                since: Some("10".into()),
                until: Some("5".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("empty"), "{e}");
        // Patterns are not names.
        assert!(check(QueryFilters {
            labels: vec!["c%".into()],
            ..Default::default()
        })
        .is_ok());
    }

    #[test]
    fn the_near_zero_tail_is_hidden_unless_asked_for() {
        let q = check(QueryFilters::default()).unwrap();
        assert_eq!(q.min_probability, Some(DEFAULT_MIN_PROBABILITY));
        let q = check(QueryFilters {
            min_prob: Some(0.0),
            labels: vec!["car".into(), "dog".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(q.min_probability, Some(0.0));
        assert_eq!(q.labels.len(), 2);
    }
}
