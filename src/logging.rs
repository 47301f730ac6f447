//! Logs: `tracing` to stderr, filtered by `RUST_LOG`, written the way journald wants them
//! when the service runs under systemd.
//!
//! Rules, and why:
//! - `RUST_LOG` is the filter (`CLIPTAG_LOG` is read when `RUST_LOG` is unset, for
//!   configs written before). The default is `info` for cliptag and `warn` for the crates
//!   it uses.
//! - A bare level (`RUST_LOG=debug`) applies to cliptag's own crates only: tract at debug
//!   prints thousands of lines per model load, which buries the one line per window a user
//!   asked for. Naming a crate (`RUST_LOG=debug,tract_core=debug`) still reaches it.
//! - Under journald (`JOURNAL_STREAM` set, as systemd does for a service whose stderr is
//!   the journal) every line starts with its syslog priority (`<3>` error … `<7>` debug), so
//!   `journalctl -p warning` filters, and carries no timestamp of its own: the journal has
//!   one.
//! - Colour only for a person at a terminal, and never with `NO_COLOR`.

use std::io::IsTerminal;

use tracing::Level;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// The crates whose logs a bare level in `RUST_LOG` is about.
const OWN_CRATES: [&str; 3] = ["cliptag", "cliptag_tract", "cliptag_tune"];

/// The filter `RUST_LOG` (or `CLIPTAG_LOG`) asks for, bare levels narrowed to our crates.
pub fn filter_directives(env: Option<&str>) -> String {
    let Some(env) = env.map(str::trim).filter(|e| !e.is_empty()) else {
        return own_at("info");
    };
    let mut out = Vec::new();
    for directive in env.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains('=')
            && directive
                .parse::<tracing::level_filters::LevelFilter>()
                .is_ok();
        if bare {
            out.push(own_at(directive));
        } else {
            out.push(directive.to_string());
        }
    }
    if out.is_empty() {
        own_at("info")
    } else {
        out.join(",")
    }
}

fn own_at(level: &str) -> String {
    std::iter::once("warn".to_string())
        .chain(OWN_CRATES.iter().map(|c| format!("{c}={level}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// syslog priority of a level, as journald reads it from a `<N>` prefix.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Prefixes each line with its priority for journald.
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Install the subscriber; call once, first thing in `main`.
pub fn init() {
    let env = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("CLIPTAG_LOG").ok());
    let filter = EnvFilter::try_new(filter_directives(env.as_deref()))
        .unwrap_or_else(|_| EnvFilter::new(own_at("info")));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi =
        !journald && std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter);
    if journald {
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false);
        builder.event_format(Journald(format)).init();
    } else {
        builder.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_is_about_our_crates_a_named_crate_is_heard() {
        assert_eq!(
            filter_directives(None),
            "warn,cliptag=info,cliptag_tract=info,cliptag_tune=info"
        );
        assert_eq!(
            filter_directives(Some("debug")),
            "warn,cliptag=debug,cliptag_tract=debug,cliptag_tune=debug"
        );
        assert_eq!(
            filter_directives(Some("debug,tract_core=trace")),
            "warn,cliptag=debug,cliptag_tract=debug,cliptag_tune=debug,tract_core=trace"
        );
        assert_eq!(filter_directives(Some("cliptag=trace")), "cliptag=trace");
    }

    #[test]
    fn priorities_are_syslogs() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
