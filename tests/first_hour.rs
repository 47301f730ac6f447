//! A new user's first hour (issue 19), one test per thing that went wrong for them, through
//! the real binary: real files with real container dates, a real RTSP camera on loopback,
//! the daemon killed for real, real pipes closed under it.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use crate::common::child::*;
use crate::common::home::*;
use crate::common::*;

/// 2026-12-01T08:00:00Z: the container date written into the test recordings.
const DEC_1_0800Z: u64 = 1_796_112_000;

/// (1) A camera's windows carry the wall-clock time they were captured at, shown as a date
/// and time; a position in a file means nothing for a camera.
#[test]
fn camera_windows_show_when_they_were_captured_not_hours_since_1970() {
    let port = free_port();
    let mut server = rtsp_server(port);
    let home = Home::new("dog\ncar\n");
    let config = home.config(&format!(
        "[[source]]\nname = \"driveway\"\nuri = \"rtsp://127.0.0.1:{port}/test\"\n"
    ));
    let before = unix_now();
    let mut daemon = Daemon::start(&config, &[("TZ", "UTC")]);
    wait_until(Duration::from_secs(60), "two camera windows", || {
        Command::new(env!("CARGO_BIN_EXE_cliptag"))
            .args(["query", "--db", &home.db(), "--json", "--top"])
            .output()
            .map(|o| text(&o.stdout).lines().count() >= 2)
            .unwrap_or(false)
    });
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).unwrap().success());
    let after = unix_now();
    let _ = server.kill();
    let _ = server.wait();

    let rows = home.query(&["--top"]);
    assert!(rows.len() >= 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r["kind"], "live");
        assert!(r["offset_s"].is_null(), "{r}");
        // Captured while the daemon ran, with a whole RFC 3339 time beside the seconds.
        let start = f(r, "start_unix");
        assert!(
            start >= before - 11.0 && start <= after,
            "{start} not in the run"
        );
        let rfc = r["start"].as_str().unwrap();
        assert!(rfc.ends_with("+00:00") && rfc.starts_with("20"), "{rfc}");
    }
    let o = home.cliptag(&["query", "--db", &home.db(), "--top"]);
    let table = text(&o.stdout);
    let today = &rows[0]["start"].as_str().unwrap()[..10];
    for line in table.lines().skip(1) {
        assert!(line.starts_with("driveway  "), "{table}");
        assert!(line.contains(today), "no date in {line:?}");
        assert!(!line.contains("4990"), "hours since 1970 in {line:?}");
    }
    assert_eq!(table.lines().count(), rows.len() + 1);
    // `--since 1:00` is a position in a file: no camera window has one. A minute ago is a
    // time: all of them.
    assert!(home.query(&["--since", "1:00"]).is_empty());
    assert_eq!(home.query(&["--top", "--since", "10m"]).len(), rows.len());
}

/// (2, 5) A file's windows sit at the time it was recorded (the container's date, else the
/// file's modification time, else the config's word); pointing a name at another file
/// makes another source instead of mixing two videos; times are asked in every form.
#[test]
fn files_sit_at_their_recording_time_and_a_reused_name_is_another_source() {
    let home = Home::new("dog\ncar\ncolour bars\n");
    let a = recording(
        &clips().join("three_scenes_10s.mp4"),
        &home.path("a.mp4"),
        Some(DEC_1_0800Z),
    );
    let b = recording(
        &clips().join("scenes_720p_h264.mp4"),
        &home.path("b.mp4"),
        None,
    );
    // b has no date inside: its modification time (when the recorder closed it) says it
    // ended at 2026-12-02T10:01:00Z, so it started one minute earlier.
    let closed = UNIX_EPOCH + Duration::from_secs(DEC_1_0800Z + 86_400 + 7_260);
    std::fs::File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_modified(closed)
        .unwrap();
    let source =
        |file: &Path, extra: &str| format!("[[source]]\nname = \"cam\"\nuri = {:?}\n{extra}", file);
    for body in [source(&a, ""), source(&b, "")] {
        let config = home.config(&body);
        let o = home.cliptag(&["run", "--config", config.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }

    let rows = home.query(&["--top", "--source", "cam"]);
    let a_rows: Vec<_> = rows
        .iter()
        .filter(|r| r["uri"] == a.to_str().unwrap())
        .collect();
    let b_rows: Vec<_> = rows
        .iter()
        .filter(|r| r["uri"] == b.to_str().unwrap())
        .collect();
    assert_eq!((a_rows.len(), b_rows.len()), (1, 6), "{rows:?}");
    assert_eq!(a_rows[0]["start"], "2026-12-01T08:00:00.000+00:00");
    assert_eq!(f(a_rows[0], "offset_s"), 0.0);
    for (i, r) in b_rows.iter().enumerate() {
        let expected = (DEC_1_0800Z + 86_400 + 7_200) as f64 + 10.0 * i as f64;
        assert_eq!(f(r, "start_unix"), expected, "{r}");
        assert_eq!(f(r, "offset_s"), 10.0 * i as f64);
        assert!(
            f(r, "processed_at_unix") > expected,
            "tagged after it was recorded"
        );
    }

    // The same recording asked by the forms people type.
    let on_dec_1 = |args: &[&str]| home.query(&[&["--top"], args].concat()).len();
    assert_eq!(
        on_dec_1(&["--since", "2026-12-01", "--until", "2026-12-02"]),
        1
    );
    assert_eq!(
        on_dec_1(&[
            "--since",
            "2026-12-01T09:00:00+01:00",
            "--until",
            "2026-12-01T08:00:05Z"
        ]),
        1
    );
    assert_eq!(on_dec_1(&["--since", "@1796112010"]), 6);
    assert_eq!(on_dec_1(&["--since", "2026-12-02 10:00:30"]), 3);
    // Local times are the box's zone: 09:00 in Berlin is 08:00 UTC.
    let db = home.db();
    let berlin = cliptag()
        .args([
            "query",
            "--db",
            &db,
            "--json",
            "--top",
            "--until",
            "2026-12-01 09:00:05",
        ])
        .env("TZ", "Europe/Berlin")
        .output()
        .unwrap();
    let shown = json_lines(&berlin.stdout);
    assert_eq!(shown.len(), 1, "{}", text(&berlin.stderr));
    assert_eq!(shown[0]["start"], "2026-12-01T09:00:00.000+01:00");
    // Relative forms reach back from now: nothing recorded in the last hour, both files
    // within the last year.
    assert_eq!(on_dec_1(&["--since", "1h"]), 0);
    assert_eq!(on_dec_1(&["--since", "365d"]), 7);
    assert_eq!(on_dec_1(&["--until", "yesterday"]), 7);

    // The config's word beats the file's: a camera's recorder with a clock set wrong.
    let config = home.config(&source(&a, "recorded_at = \"2026-11-30T23:00:00-01:00\""));
    let o = home.cliptag(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let a_rows: Vec<_> = home
        .query(&["--top", "--source", "cam"])
        .into_iter()
        .filter(|r| r["uri"] == a.to_str().unwrap())
        .collect();
    assert_eq!(a_rows.len(), 1, "a re-run replaces the file's own windows");
    assert_eq!(a_rows[0]["start"], "2026-12-01T00:00:00.000+00:00");
}

/// A clip tagged once, for the query tests: six windows of changing scenes.
fn tagged_scenes(home: &Home) {
    std::fs::copy(
        clips().join("scenes_720p_h264.mp4"),
        home.path("scenes.mp4"),
    )
    .unwrap();
    home.run_files(&["scenes.mp4"]);
}

/// (3) `query` answers "when did X show up": no near-zero rows, the newest rows under a
/// limit, several labels and sources, and questions about things the log never saw are
/// refused with what it knows.
#[test]
fn query_answers_when_a_label_showed_up() {
    let home = Home::new("dog\ncar\ncolour bars\nsunset\na person walking in the street\n");
    tagged_scenes(&home);
    let everything = home.query(&["--min-prob", "0"]);
    let shown = home.query(&[]);
    assert!(
        shown.iter().all(|r| f(r, "probability") >= 0.01),
        "near-zero rows shown"
    );
    let expected: Vec<_> = everything
        .iter()
        .filter(|r| f(r, "probability") >= 0.01)
        .collect();
    assert_eq!(shown.len(), expected.len());
    assert!(
        shown.len() < everything.len(),
        "the tiny model leaves a tail"
    );

    // --limit N: the newest N rows, oldest first.
    let newest = home.query(&["--min-prob", "0", "--limit", "3"]);
    assert_eq!(newest, everything[everything.len() - 3..]);

    // Several labels: rows of any of them.
    let two = home.query(&["--min-prob", "0", "--label", "dog", "--label", "car"]);
    let want: Vec<_> = everything
        .iter()
        .filter(|r| r["label"] == "dog" || r["label"] == "car")
        .cloned()
        .collect();
    assert_eq!(two, want);
    assert!(!two.is_empty());

    // Occurrences: back-to-back windows of a label merged, first and last seen.
    let groups = home.query(&["--group", "--top"]);
    let tops = home.query(&["--top"]);
    let windows: u64 = groups.iter().map(|g| g["windows"].as_u64().unwrap()).sum();
    assert_eq!(windows as usize, tops.len());
    for g in &groups {
        assert!(f(g, "end_unix") > f(g, "start_unix"), "{g}");
    }

    let source = home.path("scenes.mp4").display().to_string();
    let e = home.refused(&["--label", "cat"]);
    assert!(
        e.contains("unknown label \"cat\"") && e.contains("colour bars"),
        "{e}"
    );
    let e = home.refused(&["--label", "Car"]);
    assert!(e.contains("did you mean \"car\""), "{e}");
    let e = home.refused(&["--source", "nosuch"]);
    assert!(
        e.contains("unknown source \"nosuch\"") && e.contains(&source),
        "{e}"
    );
    let e = home.refused(&["--min-prob", "50"]);
    assert!(e.contains("between 0 and 1"), "{e}");
    let e = home.refused(&["--since", "10", "--until", "5"]);
    assert!(e.contains("the range is empty"), "{e}");
    let e = home.refused(&["--since", "soon"]);
    assert!(e.contains("\"soon\"") && e.contains("yesterday"), "{e}");
    let e = home.refused(&["--limit", "0"]);
    assert!(e.contains("--limit 0"), "{e}");
}

/// (4) A pile of recordings is tagged without a config: directories walked, globs
/// expanded, each file its own source, unchanged files skipped the second time; a
/// `[[source]]` may name a directory too.
#[test]
fn a_pile_of_recordings_is_tagged_without_a_config() {
    let home = Home::new("dog\ncar\n");
    let pile = home.path("pile");
    std::fs::create_dir_all(pile.join("monday")).unwrap();
    std::fs::copy(
        clips().join("three_scenes_10s.mp4"),
        pile.join("monday/a.mp4"),
    )
    .unwrap();
    std::fs::copy(clips().join("vp9.webm"), pile.join("b.webm")).unwrap();
    std::fs::copy(clips().join("mjpeg_5fps.avi"), home.path("c.avi")).unwrap();
    std::fs::write(pile.join("notes.txt"), "not a video").unwrap();

    let o = home.run_files(&["pile", "*.avi"]);
    let log = text(&o.stderr);
    assert!(
        log.contains("tagged 3 window(s) from 3 of 3 source(s)"),
        "{log}"
    );
    let sources: Vec<String> = home
        .query(&["--top"])
        .iter()
        .map(|r| r["source"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = ["c.avi", "pile/b.webm", "pile/monday/a.mp4"]
        .iter()
        .map(|p| home.path(p).display().to_string())
        .collect();
    let mut named = sources.clone();
    named.sort();
    assert_eq!(named, expected);

    // Again: nothing changed, nothing to do.
    let o = home.run_files(&["pile", "*.avi"]);
    let log = text(&o.stderr);
    assert!(
        log.contains("3 file(s) already tagged, unchanged, skipped"),
        "{log}"
    );
    // A file that changed is tagged again.
    std::fs::copy(clips().join("h264.mkv"), home.path("c.avi")).unwrap();
    let o = home.run_files(&["pile", "*.avi"]);
    let log = text(&o.stderr);
    assert!(
        log.contains("from 1 of 1 source(s)") && log.contains("2 file(s) already tagged"),
        "{log}"
    );

    // Names that name nothing say so.
    let o = home.cliptag(&[
        "run",
        "--model",
        tiny_model().to_str().unwrap(),
        "--labels",
        "labels.txt",
        "nothere/",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("\"nothere/\": no such file or directory"));

    // A config's source may be a directory: NAME/PATH per file.
    let config = home.config("[[source]]\nname = \"nas\"\nuri = \"pile\"\n");
    let o = home.cliptag(&["run", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut nas: Vec<String> = home
        .query(&["--top"])
        .iter()
        .filter_map(|r| {
            r["source"]
                .as_str()
                .filter(|s| s.starts_with("nas/"))
                .map(String::from)
        })
        .collect();
    // In time order, which follows the files' modification times: sorted, for the names.
    nas.sort();
    assert_eq!(nas, ["nas/b.webm", "nas/monday/a.mp4"]);
}

/// (6) An installed box's commands find its config without `--config`.
#[test]
fn commands_find_the_config_where_it_is_kept() {
    let home = Home::new("dog\ncar\n");
    let config = home.config(&format!(
        "[[source]]\nname = \"clip\"\nuri = {:?}\n",
        clips().join("three_scenes_10s.mp4")
    ));
    let with_env = |args: &[&str]| {
        cliptag()
            .args(args)
            .current_dir(home.dir.path())
            .env("CLIPTAG_CONFIG", &config)
            .output()
            .unwrap()
    };
    assert!(with_env(&["run"]).status.success());
    let q = with_env(&["query", "--json", "--top"]);
    assert_eq!(json_lines(&q.stdout).len(), 1, "{}", text(&q.stderr));
    let s = with_env(&["status", "--json"]);
    assert_eq!(json_lines(&s.stdout)[0]["state"], "finished");
    assert!(with_env(&["labels"]).status.success());

    // Without one anywhere, the error says where a config is looked for, once.
    let o = home.cliptag(&["query"]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert!(
        e.contains("CLIPTAG_CONFIG") || e.contains("/etc/cliptag/cliptag.toml"),
        "{e}"
    );
    let o = home.cliptag(&["query", "--config", "missing.toml"]);
    let e = text(&o.stderr);
    assert_eq!(
        e.matches("No such file").count() + e.matches("not found").count(),
        1,
        "{e}"
    );
}

/// (7, 8) Without a terminal, progress comes as log lines with position, percent and time
/// left; `RUST_LOG` filters; under journald every line carries its priority and no
/// timestamp; debug shows one line per window and nothing of tract's internals.
#[test]
fn progress_and_logs_are_readable_in_the_journal() {
    let home = Home::new("dog\ncar\n");
    let config = home.config(&format!(
        "[daemon]\nprogress_interval = \"1ms\"\n\n[[source]]\nname = \"long\"\nuri = {:?}\n",
        clips().join("scenes_720p_h264.mp4")
    ));
    let config = config.to_str().unwrap().to_string();
    // The daemon table above comes after the one the helper wrote: one [daemon] only.
    let text_config = std::fs::read_to_string(&config).unwrap().replacen(
        "[daemon]\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\n",
        "",
        1,
    );
    std::fs::write(&config, text_config).unwrap();
    let o = cliptag()
        .args(["run", "--config", &config])
        .env("RUST_LOG", "debug")
        .env("JOURNAL_STREAM", "8:12345")
        .output()
        .unwrap();
    let log = text(&o.stderr);
    assert!(o.status.success(), "{log}");
    let logged: Vec<&str> = log.lines().filter(|l| l.starts_with('<')).collect();
    assert!(!logged.is_empty(), "{log}");
    for line in &logged {
        let priority = &line[1..2];
        assert!(["3", "4", "6", "7"].contains(&priority), "{line}");
        assert!(
            !line[3..].starts_with("20"),
            "a timestamp of our own: {line}"
        );
    }
    let windows = logged
        .iter()
        .filter(|l| l.contains("window tagged"))
        .count();
    assert_eq!(windows, 6, "{log}");
    assert!(logged
        .iter()
        .all(|l| l.starts_with("<7>") || !l.contains("window tagged")));
    assert!(
        !log.contains("tract_core"),
        "tract's internals at a bare debug:\n{log}"
    );
    let progress: Vec<&&str> = logged.iter().filter(|l| l.contains(" progress ")).collect();
    assert!(!progress.is_empty(), "{log}");
    assert!(
        progress
            .iter()
            .all(|l| l.contains("percent=") && l.contains("eta=") && l.contains("of_s=60")),
        "{progress:?}"
    );
    // A CPU build on the CPU says nothing about CUDA unless asked (debug).
    let cuda_lines = log
        .lines()
        .filter(|l| l.contains("CUDA") && !l.starts_with("<7>"))
        .count();
    assert_eq!(cuda_lines, usize::from(cfg!(feature = "cuda")), "{log}");

    // RUST_LOG=warn leaves only warnings and worse.
    let o = cliptag()
        .args(["run", "--config", &config])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let quiet = text(&o.stderr);
    assert!(!quiet.contains(" INFO "), "{quiet}");
}

/// (9) `status` shows whole reasons and sources whose daemon is gone as stale; the run's
/// summary counts the sources that delivered, and the labels in force at the end.
#[test]
fn status_tells_the_truth_about_dead_cameras_and_dead_daemons() {
    let port = free_port();
    let dead = free_port();
    let mut server = rtsp_server(port);
    let home = Home::new("dog\ncar\n");
    let config = home.config(&format!(
        "[[source]]\nname = \"driveway\"\nuri = \"rtsp://127.0.0.1:{port}/test\"\n\n[[source]]\nname = \"backyard\"\nuri = \"rtsp://127.0.0.1:{dead}/nothing-listens-on-this-rather-long-path\"\n"
    ));
    let mut daemon = Daemon::start(&config, &[]);
    // Empty until the daemon has made its database.
    let status = || {
        let o = home.cliptag(&["status", "--config", config.to_str().unwrap()]);
        text(&o.stdout)
    };
    wait_until(
        Duration::from_secs(60),
        "a streaming camera and a dead one",
        || {
            let s = status();
            s.contains("streaming") && s.contains("backing off")
        },
    );
    let table = status();
    let backyard = table.lines().find(|l| l.starts_with("backyard")).unwrap();
    assert!(
        backyard.contains("nothing-listens-on-this-rather-long-path")
            && backyard.contains("Failed to connect"),
        "the reason is cut: {backyard}"
    );

    wait_until(Duration::from_secs(60), "a window of the camera", || {
        !text(&home.cliptag(&["query", "--db", &home.db(), "--top"]).stdout)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .is_empty()
    });
    // A label reload before the end: the summary names the labels in force.
    std::fs::write(home.path("labels.txt"), "dog\ncar\nsunset\n").unwrap();
    daemon.signal("HUP");
    wait_until(Duration::from_secs(30), "the reload", || {
        daemon.log().contains("labels reloaded")
    });
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).unwrap().success());
    let log = daemon.log();
    assert!(
        log.contains("from 1 of 2 source(s)") && log.contains("3 labels)"),
        "{log}"
    );

    // Killed while streaming: the state it left says streaming, but nobody refreshes it.
    let mut daemon = Daemon::start(&config, &[]);
    wait_until(Duration::from_secs(60), "streaming again", || {
        status()
            .lines()
            .any(|l| l.starts_with("driveway") && l.contains("streaming"))
    });
    daemon.signal("KILL");
    daemon.wait_exit(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_secs(17));
    let table = status();
    let driveway = table.lines().find(|l| l.starts_with("driveway")).unwrap();
    assert!(
        driveway.contains("stale") && driveway.contains("is it running?"),
        "{table}"
    );
    let o = home.cliptag(&["status", "--config", config.to_str().unwrap(), "--json"]);
    let states = json_lines(&o.stdout);
    assert_eq!(states.len(), 2);
    let d = states.iter().find(|s| s["source"] == "driveway").unwrap();
    assert_eq!(
        (d["state"].as_str(), d["recorded_state"].as_str()),
        (Some("stale"), Some("streaming"))
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// Runs `cliptag ARGS` with a standard output whose reader is already gone.
fn into_closed_pipe(home: &Home, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = cliptag()
        .args(args)
        .current_dir(home.dir.path())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

/// (10) Scripting: a closed pipe ends quietly with 0, partial failure is non-zero with
/// each error once, `--json` is JSON lines everywhere, and a model directory is named one
/// way (every flag's help text: the binary's unit test `every_flag_is_explained`).
#[test]
fn scripts_get_unix_manners() {
    let home = Home::new("dog\ncar\ncolour bars\n");
    tagged_scenes(&home);
    let db = home.db();
    for args in [
        vec!["query", "--db", &db, "--json", "--min-prob", "0"],
        vec!["status", "--db", &db, "--json"],
    ] {
        let o = into_closed_pipe(&home, &args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", text(&o.stderr));
        assert!(
            !text(&o.stderr).contains("Broken pipe"),
            "{}",
            text(&o.stderr)
        );
    }
    let model = tiny_model().display().to_string();
    let clip = clips().join("three_scenes_10s.mp4").display().to_string();
    let o = into_closed_pipe(&home, &["embed", "--model", &model, "--fps", "1", &clip]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));

    // Two of three inputs fail: exit 1, each named once, the good one still printed.
    let o = home.cliptag(&[
        "embed",
        "--model",
        &model,
        "--fps",
        "1",
        &clip,
        "missing.mp4",
        "labels.txt",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(json_lines(&o.stdout).len(), 10);
    let e = text(&o.stderr);
    for name in ["missing.mp4", "labels.txt"] {
        let lines: Vec<&str> = e.lines().filter(|l| l.contains(name)).collect();
        assert_eq!(lines.len(), 1, "{name}: {e}");
        assert_eq!(lines[0].matches(name).count(), 1, "{}", lines[0]);
    }

    // JSON lines in every command.
    let status = home.cliptag(&["status", "--db", &db, "--json"]);
    assert_eq!(json_lines(&status.stdout).len(), 1);
    // One time shape in JSON and CSV: RFC 3339 and unix seconds.
    let csv = home.cliptag(&["status", "--db", &db, "--csv"]);
    let csv = text(&csv.stdout);
    assert!(
        csv.lines().next().unwrap().contains("updated,updated_unix"),
        "{csv}"
    );

    // One way to name a model directory: --model, in every command that loads one.
    for command in ["embed", "embed-text", "model check"] {
        let mut args: Vec<&str> = command.split(' ').collect();
        args.push("--help");
        let help = text(&home.cliptag(&args).stdout);
        assert!(help.contains("--model <DIR>"), "{command}: {help}");
    }
    let check = home.cliptag(&["model", "check", "--model", &model]);
    assert!(check.status.success(), "{}", text(&check.stderr));
}
