//! Times people read and type: one representation per audience, one parser for all.
//!
//! Rules, and why:
//! - An instant is unix seconds (`f64`), made once from the run's injected clock (see
//!   `clock.rs`) or read from a recording; nothing here asks the system for the time except
//!   through a `now` its caller passes in.
//! - People read local wall-clock time in the box's time zone ([`Zone::local`]: `TZ`, else
//!   the system's), without the offset in tables; machines read RFC 3339 with the offset
//!   *and* unix seconds, the same two fields in every JSON and CSV output.
//! - Media time (a position in a file) is never shown as a clock of the day: it is an
//!   offset, `m:ss.mmm` or `h:mm:ss.mmm`.
//! - What people type ([`parse_time`]): a position in a file (`90`, `1:30`, `1:02:03`,
//!   `90s`), or an instant: `@unix`, RFC 3339 with any offset, a local date or date and time
//!   without offset (read in the box's time zone, as people mean it), `now`, `today`,
//!   `yesterday`, or how long ago (`30m`, `1h`, `2d`, `1w`, `45s ago`).

use std::fmt;

use jiff::civil;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ZonedDateTime as Zoned};

/// What a `--since`/`--until` value names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeSpec {
    /// Seconds into a file.
    Media(f64),
    /// Unix seconds.
    Wall(f64),
}

/// The time zone times are shown and read in.
#[derive(Clone)]
pub struct Zone(TimeZone);

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.name())
    }
}

impl Zone {
    /// The box's time zone: `TZ` when set, else the system's (`/etc/localtime`), else UTC.
    pub fn local() -> Zone {
        Zone(TimeZone::try_system().unwrap_or(TimeZone::UTC))
    }

    pub fn utc() -> Zone {
        Zone(TimeZone::UTC)
    }

    /// A named IANA zone (`Europe/Berlin`), for tests and explicit settings.
    pub fn named(name: &str) -> Result<Zone, String> {
        TimeZone::get(name)
            .map(Zone)
            .map_err(|e| format!("unknown time zone {name:?}: {e}"))
    }

    /// The zone's IANA name, or its offset when it has none.
    pub fn name(&self) -> String {
        self.0
            .iana_name()
            .map(str::to_string)
            .unwrap_or_else(|| "local".to_string())
    }

    fn zoned(&self, unix: f64) -> Option<Zoned> {
        // Milliseconds are all any output shows; rounding to them first keeps f64's
        // sub-microsecond error at today's unix times out of the printed digits.
        let millis = (unix * 1e3).round();
        if !millis.is_finite() || millis.abs() > 1e16 {
            return None;
        }
        Timestamp::from_millisecond(millis as i64)
            .ok()
            .map(|t| t.to_zoned_datetime(self.0.clone()))
    }

    /// `2026-12-07 14:03:05` in this zone: what a table shows.
    pub fn clock(&self, unix: f64) -> String {
        self.zoned(unix)
            .map(|z| z.strftime("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "?".into())
    }

    /// `2026-12-07T14:03:05.250+01:00`: RFC 3339 with this zone's offset, milliseconds.
    pub fn rfc3339(&self, unix: f64) -> String {
        self.zoned(unix)
            .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string())
            .unwrap_or_else(|| "?".into())
    }
}

/// A position in a file: `m:ss.mmm`, or `h:mm:ss.mmm` from an hour on.
pub fn offset(seconds: f64) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}.{ms:03}")
    } else {
        format!("{m:02}:{s:02}.{ms:03}")
    }
}

/// A length of time in its largest fitting unit: `45s`, `5m`, `2h`, `3d`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 90.0 {
        format!("{s:.0}s")
    } else if s < 90.0 * 60.0 {
        format!("{:.0}m", s / 60.0)
    } else if s < 36.0 * 3600.0 {
        format!("{:.0}h", s / 3600.0)
    } else {
        format!("{:.0}d", s / 86_400.0)
    }
}

/// How long ago, for ages in tables (`3s ago`, `5m ago`); a time ahead by more than a
/// second (two boxes' clocks, or one stepped back) says so.
pub fn age(seconds: f64) -> String {
    if !seconds.is_finite() {
        "-".into()
    } else if seconds < -1.0 {
        format!("in {}", duration(-seconds))
    } else {
        format!("{} ago", duration(seconds))
    }
}

const FORMS: &str = "a position in the file (90, 1:30, 1:02:03), @unix seconds, an RFC 3339 \
time (2026-12-07T14:00:00+01:00), a local date or time (2026-12-07, 2026-12-07 14:00), \
now, today, yesterday, or how long ago (30m, 1h, 2d, 1w)";

/// Parse a time as people type it; `now` (unix seconds) and `zone` anchor the relative and
/// local forms. Errors name the value and list the forms.
pub fn parse_time(value: &str, now: f64, zone: &Zone) -> Result<TimeSpec, String> {
    let v = value.trim();
    let bad = || format!("{value:?}: expected {FORMS}");
    if v.is_empty() {
        return Err(bad());
    }
    if let Some(unix) = v.strip_prefix('@') {
        return match unix.parse::<f64>() {
            Ok(t) if t.is_finite() => Ok(TimeSpec::Wall(t)),
            _ => Err(format!("{value:?}: expected @<unix seconds>")),
        };
    }
    if let Some(media) = media_position(v) {
        return media
            .map(TimeSpec::Media)
            .map_err(|e| format!("{value:?}: {e}"));
    }
    let now_zoned = zone.zoned(now).ok_or_else(bad)?;
    match v.to_ascii_lowercase().as_str() {
        "now" => return Ok(TimeSpec::Wall(now)),
        "today" => return start_of(now_zoned.date(), zone).ok_or_else(bad),
        "yesterday" => {
            let day = now_zoned.date().yesterday().map_err(|_| bad())?;
            return start_of(day, zone).ok_or_else(bad);
        }
        _ => {}
    }
    if let Ok(t) = v.parse::<Timestamp>() {
        return Ok(TimeSpec::Wall(unix_of(t)));
    }
    if let Ok(dt) = v.replacen(' ', "T", 1).parse::<civil::DateTime>() {
        return dt
            .to_zoned_datetime(zone.0.clone())
            .map(|z| TimeSpec::Wall(unix_of(z.timestamp())))
            .map_err(|e| format!("{value:?}: {e}"));
    }
    if let Ok(date) = v.parse::<civil::Date>() {
        return start_of(date, zone).ok_or_else(bad);
    }
    let ago = v.strip_suffix("ago").map(str::trim).unwrap_or(v);
    if let Ok(span) = ago.parse::<Span>() {
        if span.is_negative() {
            return Err(format!("{value:?}: a time ago cannot be negative"));
        }
        return now_zoned
            .checked_sub(span)
            .map(|z| TimeSpec::Wall(unix_of(z.timestamp())))
            .map_err(|e| format!("{value:?}: {e}"));
    }
    Err(bad())
}

/// An absolute instant as a setting names one: `@unix`, RFC 3339 with an offset, or a local
/// date or date and time (read in `zone`). Relative forms and file positions are refused:
/// a setting must mean the same thing whenever it is read.
pub fn parse_instant(value: &str, zone: &Zone) -> Result<f64, String> {
    let v = value.trim();
    let bad = || {
        format!(
            "{value:?}: expected @unix seconds, an RFC 3339 time (2026-12-07T14:00:00+01:00) or a local date or time (2026-12-07, 2026-12-07 14:00)"
        )
    };
    if let Some(unix) = v.strip_prefix('@') {
        return unix
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite())
            .ok_or_else(bad);
    }
    if let Ok(t) = v.parse::<Timestamp>() {
        return Ok(unix_of(t));
    }
    if let Ok(dt) = v.replacen(' ', "T", 1).parse::<civil::DateTime>() {
        return dt
            .to_zoned_datetime(zone.0.clone())
            .map(|z| unix_of(z.timestamp()))
            .map_err(|_| bad());
    }
    if let Ok(date) = v.parse::<civil::Date>() {
        if let Some(TimeSpec::Wall(t)) = start_of(date, zone) {
            return Ok(t);
        }
    }
    Err(bad())
}

/// `Some` when `v` is written as a media position: seconds, `m:s` or `h:m:s`, an optional
/// trailing `s`. A bare number of seconds is a position; `45s ago` is not.
fn media_position(v: &str) -> Option<Result<f64, String>> {
    let body = v.strip_suffix('s').unwrap_or(v);
    if body.is_empty()
        || !body
            .chars()
            .all(|c| c.is_ascii_digit() || c == ':' || c == '.')
    {
        return None;
    }
    let parts: Vec<&str> = body.split(':').collect();
    if parts.len() > 3 {
        return Some(Err("expected seconds, m:s or h:m:s".into()));
    }
    let mut total = 0.0;
    for part in parts {
        match part.parse::<f64>() {
            Ok(n) if n.is_finite() => total = total * 60.0 + n,
            _ => return Some(Err("expected seconds, m:s or h:m:s".into())),
        }
    }
    Some(Ok(total))
}

fn start_of(date: civil::Date, zone: &Zone) -> Option<TimeSpec> {
    date.to_zoned_datetime(zone.0.clone())
        .ok()
        .and_then(|z| z.start_of_day().ok())
        .map(|z| TimeSpec::Wall(unix_of(z.timestamp())))
}

fn unix_of(t: Timestamp) -> f64 {
    t.as_nanosecond() as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-07T12:00:00Z, a Monday; Berlin is UTC+1 in December.
    const NOON: f64 = 1_796_644_800.0;

    fn berlin() -> Zone {
        Zone::named("Europe/Berlin").unwrap()
    }

    fn wall(v: &str) -> f64 {
        match parse_time(v, NOON, &berlin()).unwrap() {
            TimeSpec::Wall(t) => t,
            other => panic!("{v}: {other:?}"),
        }
    }

    #[test]
    fn every_written_form_names_the_instant_people_mean() {
        assert_eq!(wall("@1796644800"), NOON);
        assert_eq!(wall("2026-12-07T12:00:00Z"), NOON);
        assert_eq!(wall("2026-12-07T13:00:00+01:00"), NOON);
        assert_eq!(wall("2026-12-07T07:00:00-05:00"), NOON);
        // Local forms are Berlin time.
        assert_eq!(wall("2026-12-07 13:00"), NOON);
        assert_eq!(wall("2026-12-07T13:00:00"), NOON);
        assert_eq!(wall("2026-12-07"), NOON - 13.0 * 3600.0);
        assert_eq!(wall("today"), NOON - 13.0 * 3600.0);
        assert_eq!(wall("yesterday"), NOON - 37.0 * 3600.0);
        assert_eq!(wall("now"), NOON);
        assert_eq!(wall("1h"), NOON - 3600.0);
        assert_eq!(wall("2d"), NOON - 2.0 * 86_400.0);
        assert_eq!(wall("30m"), NOON - 1800.0);
        assert_eq!(wall("45s ago"), NOON - 45.0);
    }

    #[test]
    fn positions_in_a_file_stay_media_time() {
        let media = |v: &str| parse_time(v, NOON, &berlin()).unwrap();
        assert_eq!(media("90"), TimeSpec::Media(90.0));
        assert_eq!(media("90s"), TimeSpec::Media(90.0));
        assert_eq!(media("1:30"), TimeSpec::Media(90.0));
        assert_eq!(media("1:02:03.5"), TimeSpec::Media(3723.5));
    }

    #[test]
    fn nonsense_names_the_value_and_the_forms() {
        for v in ["", "soon", "1:2:3:4", "2026-13-40", "@x", "-1h"] {
            let e = parse_time(v, NOON, &berlin()).unwrap_err();
            assert!(e.contains(&format!("{v:?}")), "{v}: {e}");
        }
        let e = parse_time("soon", NOON, &berlin()).unwrap_err();
        assert!(e.contains("yesterday") && e.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn shown_in_the_zone_with_the_offset_for_machines() {
        assert_eq!(berlin().clock(NOON), "2026-12-07 13:00:00");
        assert_eq!(
            berlin().rfc3339(NOON + 0.25),
            "2026-12-07T13:00:00.250+01:00"
        );
        assert_eq!(Zone::utc().rfc3339(NOON), "2026-12-07T12:00:00.000+00:00");
        assert_eq!(offset(3725.0), "1:02:05.000");
        assert_eq!(offset(70.25), "01:10.250");
    }
}
