//! The long-running daemon as a real child process: real signals, a real RTSP server on
//! loopback, a real notify socket, SIGKILL at random moments against a real SQLite file.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::child::*;
use crate::common::*;
use cliptag::store::{SegmentRow, Store};

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(labels: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("labels.txt"), labels).unwrap();
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn db(&self) -> PathBuf {
        self.path("tags.db")
    }

    /// A config for the tiny model: 2 frames per second, 1 s windows, quick backoff.
    /// `sources` are `[[source]]` tables' bodies.
    fn config(&self, sources: &[String], daemon: &str) -> PathBuf {
        let mut text = format!(
            r#"labels = "labels.txt"
database = "tags.db"

[model]
dir = {:?}
threads = 1

[sampling]
fps = 2.0

[window]
seconds = 1.0

[keyframes]
select = "all"
skip_unchanged = false

[classify]
top_k = 10

[daemon]
shutdown_timeout = "5s"
backoff_initial = "200ms"
backoff_max = "1s"
stall_timeout = "4s"
{daemon}
"#,
            tiny_model()
        );
        for s in sources {
            text.push_str("\n[[source]]\n");
            text.push_str(s);
            text.push('\n');
        }
        let path = self.path("cliptag.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn segments(&self, source: &str) -> Vec<SegmentRow> {
        match Store::open_existing(&self.db()) {
            Ok(store) => store.segments(Some(source)).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    fn states(&self) -> Vec<cliptag::store::SourceStateRecord> {
        match Store::open_existing(&self.db()) {
            Ok(store) => store.source_states().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    fn state(&self, name: &str) -> Option<cliptag::store::SourceStateRecord> {
        self.states().into_iter().find(|s| s.name == name)
    }
}

fn file_source(name: &str, clip: &str, extra: &str) -> String {
    format!(
        "name = {name:?}\nuri = {:?}\n{extra}",
        clips().join(clip).to_str().unwrap()
    )
}

/// A looped file played at its own rate: behaves like a camera that never ends.
fn camera_like(name: &str) -> String {
    file_source(name, "three_scenes_10s.mp4", "loop = true\nrealtime = true")
}

#[test]
fn sigterm_drains_windows_in_flight_and_exits_zero() {
    let setup = Setup::new("dog\ncar\n");
    let config = setup.config(&[camera_like("cam")], "");
    let mut daemon = Daemon::start(&config, &[]);
    wait_until(Duration::from_secs(60), "three segments", || {
        setup.segments("cam").len() >= 3
    });
    let sent = Instant::now();
    daemon.signal("TERM");
    let status = daemon
        .wait_exit(Duration::from_secs(5 + 3))
        .unwrap_or_else(|| panic!("no exit within the deadline; log:\n{}", daemon.log()));
    let took = sent.elapsed();
    assert!(status.success(), "exit {status:?}; log:\n{}", daemon.log());
    let log = daemon.log();
    assert!(!log.contains("abandoned"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    // Every window cut before the signal is written: windows form an unbroken run of
    // 1-second windows from the start of the stream's time base.
    let mut starts: Vec<i64> = setup.segments("cam").iter().map(|s| s.start_ms).collect();
    starts.sort();
    for pair in starts.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "gap in windows: {starts:?}");
    }
    let state = setup.state("cam").unwrap();
    assert_eq!(state.state, "stopped");
    eprintln!(
        "drained and exited in {took:?} with {} windows",
        starts.len()
    );
}

#[test]
fn sighup_reloads_labels_and_keeps_old_ones_when_the_file_is_broken() {
    let setup = Setup::new("dog\ncar\n");
    let config = setup.config(&[camera_like("cam")], "");
    let mut daemon = Daemon::start(&config, &[]);
    wait_until(Duration::from_secs(60), "a first segment", || {
        !setup.segments("cam").is_empty()
    });
    let latest_labels = || -> Vec<String> {
        let segments = setup.segments("cam");
        let latest = segments.iter().max_by_key(|s| s.id).unwrap();
        latest.matches.iter().map(|m| m.label.clone()).collect()
    };
    assert!(!latest_labels().contains(&"sunset".to_string()));

    std::fs::write(setup.path("labels.txt"), "dog\ncar\nsunset\n").unwrap();
    daemon.signal("HUP");
    wait_until(Duration::from_secs(30), "the new label in matches", || {
        latest_labels().contains(&"sunset".to_string())
    });
    assert!(daemon.log().contains("labels reloaded"), "{}", daemon.log());

    // Line 3 repeats line 1: rejected with its line, the three labels stay.
    std::fs::write(setup.path("labels.txt"), "dog\ncar\ndog\n").unwrap();
    daemon.signal("HUP");
    wait_until(Duration::from_secs(30), "the rejection in the log", || {
        daemon.log().contains("labels not reloaded")
    });
    let log = daemon.log();
    let rejection = log
        .lines()
        .find(|l| l.contains("labels not reloaded"))
        .unwrap();
    assert!(rejection.contains("line 3"), "{rejection}");
    assert!(rejection.contains("duplicate label"), "{rejection}");
    let count = setup.segments("cam").len();
    wait_until(
        Duration::from_secs(30),
        "segments after the rejection",
        || setup.segments("cam").len() >= count + 2,
    );
    let mut labels = latest_labels();
    labels.sort();
    assert_eq!(labels, ["car", "dog", "sunset"]);
    assert!(daemon.running());
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn sd_notify_sends_ready_watchdog_and_stopping_in_order() {
    let setup = Setup::new("dog\ncar\n");
    let config = setup.config(&[camera_like("cam")], "");
    let socket_path = setup.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut daemon = Daemon::start(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let mut messages: Vec<String> = Vec::new();
    let read_until = |messages: &mut Vec<String>, what: &str, timeout: Duration| {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                messages.extend(text.lines().map(str::to_string));
                if messages.iter().any(|m| m == what) {
                    return;
                }
            }
        }
        panic!("no {what} within {timeout:?}; got {messages:?}");
    };
    read_until(&mut messages, "READY=1", Duration::from_secs(60));
    read_until(&mut messages, "WATCHDOG=1", Duration::from_secs(10));
    daemon.signal("TERM");
    read_until(&mut messages, "STOPPING=1", Duration::from_secs(10));
    assert!(daemon.wait_exit(Duration::from_secs(10)).unwrap().success());
    let position = |what: &str| messages.iter().position(|m| m == what).unwrap();
    assert!(position("READY=1") < position("WATCHDOG=1"), "{messages:?}");
    assert!(
        position("WATCHDOG=1") < position("STOPPING=1"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("STATUS=cam: ")),
        "{messages:?}"
    );
}

#[test]
fn rtsp_source_reconnects_after_each_server_restart_while_a_file_keeps_going() {
    let port = free_port();
    let setup = Setup::new("dog\ncar\n");
    let config = setup.config(
        &[
            format!("name = \"lobby\"\nuri = \"rtsp://viewer:secret@127.0.0.1:{port}/test\""),
            camera_like("file"),
        ],
        "",
    );
    let mut server = rtsp_server(port);
    let mut daemon = Daemon::start(&config, &[]);
    let mut file_counts = Vec::new();
    for round in 0..6 {
        let before = setup.segments("lobby").len();
        wait_until(
            Duration::from_secs(45),
            &format!("lobby segments in round {round}"),
            || setup.segments("lobby").len() >= before + 2,
        );
        assert!(daemon.running(), "daemon died; log:\n{}", daemon.log());
        file_counts.push(setup.segments("file").len());
        if round == 5 {
            break;
        }
        let _ = server.kill();
        let _ = server.wait();
        wait_until(Duration::from_secs(30), "lobby to notice", || {
            setup
                .state("lobby")
                .is_some_and(|s| s.state == "backing off" || s.state == "connecting")
        });
        server = rtsp_server(port);
    }
    let _ = server.kill();
    let state = setup.state("lobby").unwrap();
    // Five outages came back (a connection that drops once more may add one); more
    // attempts than that.
    assert!(
        (5..=6).contains(&state.reconnects) && state.retries >= state.reconnects,
        "{state:?}"
    );
    assert!(!state.uri.contains("secret"), "{state:?}");
    let log = daemon.log();
    assert!(!log.contains("secret"), "password in the log:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        file_counts.windows(2).all(|w| w[1] > w[0]),
        "the file source stalled: {file_counts:?}"
    );
    // Segments of different connections never overwrite each other: wall-clock windows.
    let lobby = setup.segments("lobby");
    let mut starts: Vec<i64> = lobby.iter().map(|s| s.start_ms).collect();
    starts.dedup();
    assert_eq!(starts.len(), lobby.len());
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(10)).unwrap().success());
    eprintln!("lobby: {state:?}");
}

#[test]
fn broken_sources_are_named_and_backed_off_while_others_run() {
    let nobody = free_port();
    let setup = Setup::new("dog\ncar\n");
    let config = setup.config(
        &[
            format!("name = \"nobody\"\nuri = \"rtsp://admin:hunter2@127.0.0.1:{nobody}/none\""),
            "name = \"nocam\"\nuri = \"v4l2:///dev/video99\"".to_string(),
            "name = \"typo\"\nuri = \"rtps://127.0.0.1/cam\"".to_string(),
            file_source("good", "three_scenes_10s.mp4", ""),
        ],
        "",
    );
    let mut daemon = Daemon::start(&config, &[]);
    wait_until(Duration::from_secs(60), "all states", || {
        let states = setup.states();
        let get = |n: &str| states.iter().find(|s| s.name == n).cloned();
        get("good").is_some_and(|s| s.state == "finished")
            && get("typo").is_some_and(|s| s.state == "failed")
            && get("nobody").is_some_and(|s| s.retries >= 2)
            && get("nocam").is_some_and(|s| s.retries >= 2)
    });
    assert_eq!(setup.segments("good").len(), 10);
    let states = setup.states();
    let reason = |n: &str| {
        states
            .iter()
            .find(|s| s.name == n)
            .and_then(|s| s.reason.clone())
            .unwrap_or_default()
    };
    assert!(reason("nobody").contains("nobody"), "{states:?}");
    // Tried again and again, never back: no reconnect to count.
    for dead in ["nobody", "nocam"] {
        let s = states.iter().find(|s| s.name == dead).unwrap();
        assert_eq!(s.reconnects, 0, "{s:?}");
    }
    assert!(
        reason("nobody").contains(&format!("rtsp://admin:***@127.0.0.1:{nobody}/none")),
        "{states:?}"
    );
    assert!(reason("nocam").contains("/dev/video99"), "{states:?}");
    assert!(reason("typo").contains("rtps"), "{states:?}");
    assert!(!format!("{states:?}").contains("hunter2"), "{states:?}");
    assert!(!daemon.log().contains("hunter2"), "{}", daemon.log());

    let status = cliptag()
        .args(["status", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(status.status.success());
    let table = String::from_utf8_lossy(&status.stdout);
    for name in ["nobody", "nocam", "typo", "good"] {
        assert!(table.contains(name), "{table}");
    }
    assert!(daemon.running());
    daemon.signal("INT");
    assert!(daemon.wait_exit(Duration::from_secs(10)).unwrap().success());
}

#[test]
fn sigkill_at_random_moments_never_loses_committed_segments() {
    let setup = Setup::new("dog\ncar\nsunset\n");
    let config = setup.config(&[file_source("scenes", "scenes_720p_h264.mp4", "")], "");
    // A seed from the clock, printed, so a failing sequence can be replayed by hand.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill delays seed {seed}");
    let mut committed = 0usize;
    for round in 0..20 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(300 + (seed >> 33) % 1500);
        let mut daemon = Daemon::start(&config, &[]);
        std::thread::sleep(delay);
        let _ = daemon.child.kill();
        let _ = daemon.child.wait();
        if !setup.db().exists() {
            continue;
        }
        let store = Store::open_existing(&setup.db()).unwrap();
        assert_eq!(store.integrity_check().unwrap(), "ok", "round {round}");
        let count = store.segment_count().unwrap() as usize;
        assert!(
            count >= committed,
            "round {round}: {count} segments after the kill, {committed} before"
        );
        committed = count;
    }
    // And the daemon picks up and finishes the file.
    let mut daemon = Daemon::start(&config, &[]);
    let status = daemon.wait_exit(Duration::from_secs(120)).unwrap();
    assert!(status.success(), "{}", daemon.log());
    let store = Store::open_existing(&setup.db()).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    assert_eq!(store.segment_count().unwrap(), 60);
    eprintln!("{committed} segments committed across 20 kills");
}

/// Power loss, as a copy: the database and its WAL copied while the daemon writes, main
/// file first and WAL second — the order a crash leaves them in, since SQLite writes a
/// page into the main file only after its WAL frame is synced. Each copy opens with
/// integrity ok and holds every window committed before the copy began; a commit cut in
/// half by the copy is simply absent (the WAL's checksums end replay at the first torn
/// frame), never half there. The test holds a read snapshot during each copy: unlike a
/// disk at a power cut, a copy made over milliseconds could otherwise catch a WAL reset
/// between the two files.
#[test]
fn a_copy_torn_mid_write_opens_whole_and_loses_only_the_last_batch() {
    let setup = Setup::new("dog\ncar\nsunset\n");
    let config = setup.config(&[file_source("scenes", "scenes_720p_h264.mp4", "")], "");
    let mut daemon = Daemon::start(&config, &[]);
    let wal = PathBuf::from(format!("{}-wal", setup.db().display()));
    wait_until(Duration::from_secs(60), "the first windows", || {
        wal.exists()
            && Store::open_existing(&setup.db()).is_ok_and(|s| s.segment_count().unwrap_or(0) > 0)
    });
    let mut copies = 0;
    let mut cut_copies = 0;
    let mut torn_tails = 0;
    while daemon.running() && copies < 12 {
        let copy = setup.path(&format!("copy{copies}.db"));
        let reader = rusqlite::Connection::open(setup.db()).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let committed: i64 = reader
            .query_row("SELECT count(*) FROM segments", [], |r| r.get(0))
            .unwrap();
        std::fs::copy(setup.db(), &copy).unwrap();
        let wal_bytes = std::fs::copy(&wal, format!("{}-wal", copy.display())).unwrap_or(0);
        reader.execute_batch("COMMIT").unwrap();
        drop(reader);
        // A WAL is a 32-byte header and whole frames of 24 + page size bytes; anything
        // else ends in a frame the writer was still writing.
        if wal_bytes > 32 && (wal_bytes - 32) % (24 + 4096) != 0 {
            torn_tails += 1;
        }
        // The same copy with the WAL cut inside its last frame, as a power cut in the
        // middle of a commit leaves it: the last batch is gone, all of it, and only it.
        // Made before the copy is opened: closing it checkpoints its WAL away.
        let cut = (wal_bytes > 32 + 2 * (24 + 4096)).then(|| {
            let cut = setup.path(&format!("cut{copies}.db"));
            std::fs::copy(&copy, &cut).unwrap();
            let mut frames = std::fs::read(format!("{}-wal", copy.display())).unwrap();
            frames.truncate(wal_bytes as usize - 100);
            std::fs::write(format!("{}-wal", cut.display()), frames).unwrap();
            cut
        });

        let store = Store::open_existing(&copy).unwrap();
        assert_eq!(store.integrity_check().unwrap(), "ok", "copy {copies}");
        let c = rusqlite::Connection::open(&copy).unwrap();
        let (segments, without_matches): (i64, i64) = c
            .query_row(
                "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS \
                 (SELECT 1 FROM matches m WHERE m.segment_id = s.id)) FROM segments s",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(
            segments >= committed,
            "copy {copies}: {segments} windows, {committed} were committed before it began"
        );
        assert_eq!(
            without_matches, 0,
            "copy {copies}: a window without its matches"
        );
        drop((store, c));

        if let Some(cut) = &cut {
            let store = Store::open_existing(cut).unwrap();
            assert_eq!(store.integrity_check().unwrap(), "ok", "cut copy {copies}");
            let kept = store.segment_count().unwrap() as i64;
            assert!(
                kept <= segments && segments - kept <= cliptag::store::MAX_BATCH_OPS as i64,
                "cut copy {copies}: {kept} windows of {segments}: more than one batch lost"
            );
            cut_copies += 1;
        }
        copies += 1;
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(copies >= 4, "only {copies} copies before the file ended");
    assert!(cut_copies >= 2, "only {cut_copies} copies had a WAL to cut");
    eprintln!("{copies} copies ({torn_tails} caught a frame mid-write), {cut_copies} cut in their last frame");
    assert!(daemon
        .wait_exit(Duration::from_secs(120))
        .unwrap()
        .success());
}

#[test]
fn no_sources_is_a_config_error_systemd_does_not_retry() {
    let setup = Setup::new("dog\n");
    let config = setup.config(&[], "");
    let out = cliptag()
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no [[source]]"), "{err}");
}
