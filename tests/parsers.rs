//! The parsers fed what users and their editors produce, and worse (issue 20): random text,
//! and valid files with characters deleted, doubled or replaced. No input may panic, and
//! every refusal names the file and line, or the value it refuses. A fixed seed and case
//! budget keep CI's time and results the same from run to run.

use std::path::Path;

use cliptag::classify::{parse_labels, LabelError};
use cliptag::daemon::config::Config;
use cliptag::query::filters::{QueryFilters, WindowArgs};
use cliptag::times::{parse_time, Zone};
use proptest::prelude::*;
use proptest::test_runner::{Config as Budget, RngAlgorithm, TestRng, TestRunner};

/// Cases per property: a few seconds each on CI's two cores.
const CASES: u32 = 10_000;

fn runner() -> TestRunner {
    TestRunner::new_with_rng(
        Budget {
            cases: CASES,
            failure_persistence: None,
            ..Budget::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

/// Up to eight edits (delete, double or replace a character) of `text`.
fn edits_of(text: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<char>()), 1..8).prop_map(
        move |edits| {
            let mut chars: Vec<char> = text.chars().collect();
            for (at, op, c) in edits {
                if chars.is_empty() {
                    chars.push(c);
                    continue;
                }
                let i = at.index(chars.len());
                match op {
                    0 => {
                        chars.remove(i);
                    }
                    1 => chars.insert(i, chars[i]),
                    _ => chars[i] = c,
                }
            }
            chars.into_iter().collect()
        },
    )
}

const LABELS: &str =
    "# what the porch camera should notice\ndog\na person carrying a ladder\n\ncar\n";

#[test]
fn labels_files_never_panic_and_errors_name_the_line() {
    let text = prop_oneof![any::<String>(), edits_of(LABELS)];
    runner()
        .run(&text, |text| {
            match parse_labels(&text, "/etc/cliptag/labels.txt") {
                Ok(labels) => prop_assert!(!labels.is_empty()),
                Err(LabelError::Line { path, line, .. }) => {
                    prop_assert_eq!(path.as_str(), "/etc/cliptag/labels.txt");
                    prop_assert!(line >= 1 && line <= text.lines().count());
                }
                Err(e) => prop_assert!(e.to_string().contains("/etc/cliptag/labels.txt"), "{}", e),
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn configs_never_panic_and_errors_name_the_file() {
    // No machine's paths in it: the same cases, and results, on every machine.
    const BASE: &str = "labels = \"labels.txt\"\ndatabase = \"tags.db\"\n\n[model]\ndir = \"/opt/cliptag/models/clip\"\nthreads = 2\n\n[sampling]\nfps = 1.0\n\n[window]\nseconds = 10.0\n\n[daemon]\nbackoff_initial = \"200ms\"\nstall_timeout = \"10s\"\n\n[[source]]\nname = \"porch\"\nuri = \"rtsp://viewer:pw@10.0.0.5/s?token=abc\"\nlive = true\n\n[[source]]\nname = \"nas\"\nuri = \"clips/a.mp4\"\nrecorded_at = \"2026-12-07T14:00:00+01:00\"\n";
    let base = BASE;
    Config::parse(base, Path::new("/etc/cliptag/cliptag.toml")).expect("the base config is valid");
    let text = prop_oneof![any::<String>(), edits_of(base)];
    runner()
        .run(&text, |text| {
            if let Err(e) = Config::parse(&text, Path::new("/etc/cliptag/cliptag.toml")) {
                let shown = e.to_string();
                prop_assert!(shown.contains("cliptag.toml"), "{}", shown);
                prop_assert!(!shown.contains("pw@"), "a password in: {}", shown);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn time_bounds_never_panic_and_errors_quote_the_value() {
    let zone = Zone::named("Europe/Berlin").unwrap();
    let value = prop_oneof![
        any::<String>(),
        "[0-9:TZ+ .@hmsdw-]{0,24}",
        "(today|yesterday|[0-9]{1,3}[hmsdw]|@-?[0-9]{1,12}|2026-1[0-9]-[0-3][0-9]( [0-2][0-9]:[0-5][0-9])?)",
    ];
    runner()
        .run(&value, |value| {
            if let Err(e) = parse_time(&value, 1_796_652_000.0, &zone) {
                prop_assert!(e.contains(&format!("{value:?}")), "{}", e);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn query_filters_never_panic_and_errors_name_what_was_asked() {
    let known = (
        vec!["porch".to_string(), "nas/a.mp4".to_string()],
        vec!["dog".to_string(), "a person carrying a ladder".to_string()],
    );
    let zone = Zone::utc();
    let filters = (
        prop::collection::vec("[a-zA-Z% ]{0,12}|dog", 0..3),
        prop::collection::vec("[a-z/.]{0,10}|porch", 0..3),
        prop::option::of("[0-9:]{1,6}|[0-9]{1,2}[hd]|yesterday|@[0-9]{10}"),
        prop::option::of("[0-9:]{1,6}|[0-9]{1,2}[hd]|today|@[0-9]{10}"),
        prop::option::of(any::<f32>()),
        prop::option::of(any::<f32>()),
    );
    runner()
        .run(
            &filters,
            |(labels, sources, since, until, min_prob, min_cosine)| {
                let f = QueryFilters {
                    labels,
                    window: WindowArgs {
                        sources,
                        since,
                        until,
                    },
                    min_prob,
                    min_cosine,
                    ..QueryFilters::default()
                };
                if let Err(e) = f.to_query(&known, 1_796_652_000.0, &zone) {
                    prop_assert!(!e.is_empty());
                    let named = f
                        .labels
                        .iter()
                        .chain(&f.window.sources)
                        .any(|v| e.contains(v.as_str()))
                        || [&f.window.since, &f.window.until]
                            .iter()
                            .any(|t| t.as_ref().is_some_and(|t| e.contains(t.as_str())))
                        || e.contains("--min-prob")
                        || e.contains("--min-cosine")
                        || e.contains("--since");
                    prop_assert!(named, "{} does not say what it refuses in {:?}", e, f);
                }
                Ok(())
            },
        )
        .unwrap();
}
