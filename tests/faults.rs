//! Faults that must not stop a box (issue 20), through the real binary, real servers on
//! loopback and real encoded clips: credentials in every URI form never leave the box, a
//! silent camera is named as such, the last window ends with the video, and counters
//! count what they say.

use std::time::Duration;

use crate::common::child::*;
use crate::common::home::*;
use crate::common::web::{Site, WebServer};
use crate::common::*;

/// `[[source]]` tables with these bodies.
fn sources(bodies: &[String]) -> String {
    bodies
        .iter()
        .map(|b| format!("[[source]]\n{b}\n\n"))
        .collect()
}

/// Standard output and error of `cliptag ARGS` in the box, which must succeed.
fn output(home: &Home, args: &[&str]) -> String {
    let o = home.cliptag(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

/// The database file and its write-ahead log, as bytes read as text.
fn database_bytes(home: &Home) -> String {
    ["tags.db", "tags.db-wal"]
        .iter()
        .filter_map(|f| std::fs::read(home.path(f)).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

/// A password in a URI's query string, a token, userinfo: masked in the log, the database
/// (and its WAL) and every command's output, for a streaming camera, a dead one and a
/// recording on a web server.
#[test]
fn credentials_in_any_uri_form_never_leave_the_box() {
    let secrets = ["QueryPw42", "UserPw77", "TokenPw55", "HttpPw99"];
    let port = free_port();
    let dead = free_port();
    let mut camera = rtsp_server(port);
    let web = tempfile::tempdir().unwrap();
    std::fs::copy(
        clips().join("three_scenes_10s.mp4"),
        web.path().join("a.mp4"),
    )
    .unwrap();
    let server = WebServer::start(Site {
        root: web.path().to_path_buf(),
        ..Site::default()
    });
    let home = Home::new("dog\ncar\n");
    let config = home.config(&sources(&[
        format!(
            "name = \"cam\"\nuri = \"rtsp://127.0.0.1:{port}/test?user=admin&password=QueryPw42\""
        ),
        format!(
            "name = \"dead\"\nuri = \"rtsp://viewer:UserPw77@127.0.0.1:{dead}/s?token=TokenPw55\""
        ),
        format!(
            "name = \"nas\"\nuri = \"{}?auth=HttpPw99\"",
            server.url("a.mp4")
        ),
    ]));
    let config_arg = config.to_str().unwrap().to_string();
    let mut daemon = Daemon::start(&config, &[("TZ", "UTC")]);
    let state = |name: &str| home.state(name);
    wait_until(
        Duration::from_secs(60),
        "a camera window, a finished recording, a retried dead camera",
        || {
            state("nas")["state"] == "finished"
                && state("dead")["retries"].as_u64() >= Some(1)
                && state("cam")["frames"].as_u64() >= Some(12)
        },
    );
    // While it runs, the WAL holds the newest writes.
    let mut seen = vec![("database while running".to_string(), database_bytes(&home))];
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).unwrap().success());
    let _ = camera.kill();
    let _ = camera.wait();
    seen.push(("log".into(), daemon.log()));
    seen.push(("database after".into(), database_bytes(&home)));
    let db = home.db();
    let commands: [&[&str]; 6] = [
        &["status", "--config", &config_arg],
        &["status", "--config", &config_arg, "--json"],
        &["query", "--db", &db, "--top"],
        &["query", "--db", &db, "--top", "--json"],
        &["query", "--db", &db, "--top", "--csv"],
        &["labels", "--db", &db],
    ];
    for args in commands {
        seen.push((format!("{args:?}"), output(&home, args)));
    }
    assert_eq!(seen.len(), 9);
    for (what, text) in &seen {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in the {what}: {text}");
        }
    }
    // What is shown instead: the masked forms, so a user still sees which URI it is.
    let status = &seen[4].1;
    for shown in [
        format!("rtsp://127.0.0.1:{port}/test?user=admin&password=***"),
        format!("rtsp://viewer:***@127.0.0.1:{dead}/s?token=***"),
        format!("{}?auth=***", server.url("a.mp4")),
    ] {
        assert!(status.contains(&shown), "{shown} not in {status}");
    }
    assert!(
        seen[1].1.contains("s?token=***"),
        "the log names the dead camera"
    );
}

/// A window ends where the video does: a 4 s clip is 0–4 s, not 0–10 s; a 22 s one ends
/// with a 20–22 s window (MP4 and WebM, 10 s windows).
#[test]
fn the_last_window_ends_with_the_video() {
    let home = Home::new("dog\ncar\n");
    let mut files = Vec::new();
    for seconds in [4u32, 22] {
        for (ext, rate, encode) in [
            ("mp4", 10, "x264enc speed-preset=ultrafast ! mp4mux"),
            ("webm", 25, "vp8enc deadline=1 ! webmmux"),
        ] {
            let file = home.path(&format!("clip{seconds}.{ext}"));
            let pipeline = format!(
                "videotestsrc num-buffers={} pattern=ball ! video/x-raw,width=160,height=120,framerate={rate}/1 ! {encode} ! filesink location={}",
                seconds * rate,
                file.display()
            );
            let ok = std::process::Command::new("gst-launch-1.0")
                .arg("-q")
                .args(pipeline.split_whitespace())
                .status()
                .unwrap()
                .success();
            assert!(ok, "{pipeline}");
            files.push((file, seconds));
        }
    }
    let paths: Vec<String> = files.iter().map(|(f, _)| f.display().to_string()).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    home.run_files(&paths);
    let rows = home.query(&["--top"]);
    assert_eq!(files.len(), 4);
    for (file, seconds) in &files {
        let mut ends: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r["uri"] == file.display().to_string())
            .map(|r| {
                (
                    r["offset_s"].as_f64().unwrap(),
                    r["offset_end_s"].as_f64().unwrap(),
                )
            })
            .collect();
        ends.sort_by(|a, b| a.0.total_cmp(&b.0));
        let expected: Vec<(f64, f64)> = (0..seconds.div_ceil(10))
            .map(|i| {
                let start = 10.0 * f64::from(i);
                (start, (start + 10.0).min(f64::from(*seconds)))
            })
            .collect();
        assert_eq!(ends, expected, "{}", file.display());
    }
}

/// A camera (RTSP) or web server (HTTP) that takes the connection and never answers is
/// named as such, not as a damaged file, and retried.
#[test]
fn a_silent_camera_is_not_called_a_damaged_file() {
    // Accepts every connection and holds it open without a byte in reply.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    let home = Home::new("dog\ncar\n");
    let config = home.config_with(
        "stall_timeout = \"2s\"",
        &sources(&[
            format!("name = \"rtsp\"\nuri = \"rtsp://127.0.0.1:{port}/s\""),
            format!("name = \"web\"\nuri = \"http://127.0.0.1:{port}/video.mjpg\""),
        ]),
    );
    let mut daemon = Daemon::start(&config, &[]);
    let states = || home.states();
    wait_until(Duration::from_secs(60), "both retried", || {
        let s = states();
        s.len() == 2 && s.iter().all(|s| s["retries"].as_u64() >= Some(1))
    });
    let s = states();
    assert_eq!(s.len(), 2);
    for state in &s {
        let reason = state["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("no answer: the camera or server was reached but sent no video"),
            "{state}"
        );
        assert!(!reason.contains("damaged"), "{state}");
        assert_eq!(state["reconnects"].as_u64(), Some(0), "{state}");
    }
    assert!(daemon.running());
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).unwrap().success());
}

/// Why a camera or server failed, in words a user acts on: nothing listens on the port,
/// the name does not resolve, the password is refused (RTSP and HTTP 401), the path is not
/// there (404). Each retried, none ever connected.
#[test]
fn failures_name_their_cause() {
    let refused = free_port();
    let locked = free_port();
    let mut camera = rtsp_server_with(locked, &["--credentials", "admin:RightPw33"]);
    let intercom = free_port();
    let mut intercom_server = rtsp_server_with(intercom, &["--audio-only"]);
    let root = tempfile::tempdir().unwrap();
    let server = WebServer::start(Site {
        root: root.path().to_path_buf(),
        private_refuses_everyone: true,
        ..Site::default()
    });
    let home = Home::new("dog\ncar\n");
    let expected = [
        (
            "refused",
            format!("rtsp://127.0.0.1:{refused}/s"),
            format!("connection refused by 127.0.0.1:{refused}"),
        ),
        (
            "unknown",
            "rtsp://camera.invalid/s".to_string(),
            "cannot resolve host \"camera.invalid\"".to_string(),
        ),
        (
            "rtsp-password",
            format!("rtsp://admin:WrongPw11@127.0.0.1:{locked}/test"),
            "authentication failed".to_string(),
        ),
        (
            "password",
            server
                .url("private/video.mjpg")
                .replace("http://", "http://viewer:WrongPw11@"),
            "authentication failed".to_string(),
        ),
        (
            "missing",
            server.url("nothere.mp4"),
            "the camera or server has no such path".to_string(),
        ),
        (
            "intercom",
            format!("rtsp://127.0.0.1:{intercom}/test"),
            "has no video stream (audio or other data only)".to_string(),
        ),
    ];
    let bodies: Vec<String> = expected
        .iter()
        .map(|(name, uri, _)| format!("name = {name:?}\nuri = {uri:?}"))
        .collect();
    let config = home.config(&sources(&bodies));
    let mut daemon = Daemon::start(&config, &[]);
    // Polled here rather than with wait_until, so a timeout shows which source lagged.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut states = home.states();
    while !(states.len() == expected.len()
        && states.iter().all(|s| s["retries"].as_u64() >= Some(1)))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not every source retried within 60 s: {states:#?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
        states = home.states();
    }
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).unwrap().success());
    let log = daemon.log();
    assert!(!log.contains("WrongPw11"), "{log}");
    for (name, _, cause) in &expected {
        let state = home.state(name);
        let reason = state["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(cause.as_str()), "{name}: {state}");
        assert_eq!(state["reconnects"].as_u64(), Some(0), "{name}: {state}");
    }
    assert_eq!(expected.len(), 6);
    let _ = camera.kill();
    let _ = camera.wait();
    let _ = intercom_server.kill();
    let _ = intercom_server.wait();
}
