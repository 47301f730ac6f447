//! Sources served over HTTP (issue 26): a recording on a web server or NAS is tagged once,
//! like a file; a camera's MJPEG stream is watched, like an RTSP camera. Real servers on
//! loopback started by each test (tests/common/web.rs), real media made by GStreamer's
//! encoders and `hlssink2`, the real binary; each server is also killed mid-stream and
//! the outcome checked.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::child::*;
use crate::common::home::*;
use crate::common::web::{Site, WebServer};

/// Seconds of the test recording, and its windows (10 s each at 1 fps).
const RECORDING_S: u64 = 60;
const WINDOWS: usize = 6;

fn gst(args: &str) {
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(args.split_whitespace())
        .status()
        .expect("gst-launch-1.0 runs");
    assert!(status.success(), "gst-launch-1.0 {args}");
}

/// A box with a web root holding `rec.mp4` (60 s of H.264 as a recorder writes it: the
/// index at the end, so nothing decodes before the download reaches it), `stream.mp4`
/// (the same with the index first, as web video is published) and the same video as an
/// HLS VOD playlist with 2 s segments (`hls/index.m3u8`, ending in `#EXT-X-ENDLIST`).
struct Box {
    home: Home,
    /// When the recordings were made: the date their containers carry.
    made_at: f64,
}

impl std::ops::Deref for Box {
    type Target = Home;
    fn deref(&self) -> &Home {
        &self.home
    }
}

impl Box {
    fn new() -> Box {
        let home = Home::new("dog\ncar\nbouncing ball\n");
        let web = home.path("web");
        std::fs::create_dir_all(web.join("hls")).unwrap();
        let rec = web.join("rec.mp4");
        let made_at = unix_now();
        for (file, faststart) in [(&rec, false), (&web.join("stream.mp4"), true)] {
            gst(&format!(
                "videotestsrc num-buffers={} pattern=ball ! video/x-raw,width=320,height=240,framerate=10/1 ! x264enc key-int-max=20 speed-preset=ultrafast ! mp4mux faststart={faststart} ! filesink location={}",
                RECORDING_S * 10,
                file.display()
            ));
        }
        // hlssink2 writes the whole playlist at EOS, but its gst-launch-1.0 sometimes
        // never exits after that (a teardown deadlock in GStreamer 1.22): done is when the
        // playlist says it has ended.
        let playlist = web.join("hls/index.m3u8");
        let pipeline = format!(
            "filesrc location={} ! qtdemux ! h264parse ! hlssink2 location={}/seg%05d.ts playlist-location={} target-duration=2 max-files=0 playlist-length=0",
            rec.display(),
            web.join("hls").display(),
            playlist.display()
        );
        let mut hls = Command::new("gst-launch-1.0")
            .arg("-q")
            .args(pipeline.split_whitespace())
            .spawn()
            .expect("gst-launch-1.0 runs");
        let ended = || {
            std::fs::read_to_string(&playlist)
                .is_ok_and(|p| p.trim_end().ends_with("#EXT-X-ENDLIST"))
        };
        wait_until(Duration::from_secs(60), "hlssink2's playlist", || {
            ended() || hls.try_wait().ok().flatten().is_some()
        });
        let _ = hls.kill();
        let _ = hls.wait();
        assert!(ended(), "{:?}", std::fs::read_to_string(&playlist));
        Box { home, made_at }
    }

    fn web(&self) -> PathBuf {
        self.path("web")
    }

    /// A config with one source named `name` at `uri` (plus `extra` lines for it).
    fn source_config(&self, name: &str, uri: &str, extra: &str) -> PathBuf {
        self.config(&format!(
            "[[source]]\nname = {name:?}\nuri = {uri:?}\n{extra}"
        ))
    }

    /// One row per stored window of `source` (`query --top`), oldest first.
    fn windows(&self, source: &str) -> Vec<serde_json::Value> {
        let db = self.db();
        let o = self.cliptag(&["query", "--db", &db, "--json", "--top", "--source", source]);
        if !o.status.success() {
            // No window yet: the query refuses a source it does not know.
            return Vec::new();
        }
        let mut rows = json_lines(&o.stdout);
        rows.sort_by(|a, b| f(a, "start_unix").total_cmp(&f(b, "start_unix")));
        rows
    }
}

/// A recording's windows: positions 0, 10, 20 … from the start, each once, kind "file".
fn assert_recording_windows(rows: &[serde_json::Value], count: usize) {
    assert_eq!(rows.len(), count, "{rows:#?}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["kind"], "file", "{r}");
        assert_eq!(f(r, "offset_s"), 10.0 * i as f64, "{r}");
    }
}

/// An MP4 on a web server is a recording: tagged once from position 0 without a dropped
/// window, the run ends by itself, a second run replaces its windows; a connection cut
/// mid-body is resumed with a range request, not replayed from the start.
#[test]
fn a_recording_on_a_web_server_is_tagged_once_like_a_file() {
    let home = Box::new();
    let size = std::fs::metadata(home.web().join("rec.mp4")).unwrap().len();
    let server = WebServer::start(Site {
        root: home.web(),
        rate: Some(size / 4),
        cut_once_at: Some(size / 2),
        ..Site::default()
    });
    let config = home.source_config("nas", &server.url("rec.mp4"), "");
    let before = unix_now();
    let o = home.run_config(&config);
    let log = text(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(
        log.contains("has a known end: tagged once, as a recording"),
        "the decision is logged: {log}"
    );
    let rows = home.windows("nas");
    assert_recording_windows(&rows, WINDOWS);
    // Placed at the date in its container (when mp4mux wrote it), as a file would be.
    assert!(log.contains("from=\"container\""), "{log}");
    let start = f(&rows[0], "start_unix");
    assert!(
        start >= home.made_at.floor() && start < before,
        "{start}: not the container's date ({} .. {before})",
        home.made_at
    );
    let state = home.state("nas");
    assert_eq!(state["state"], "finished", "{state}");
    assert_eq!(
        (
            state["frames_dropped"].as_u64(),
            state["reconnects"].as_u64()
        ),
        (Some(0), Some(0)),
        "{state}"
    );
    // The cut response was taken up where it stopped, with a range request past the
    // middle; nothing was fetched from 0 again after the cut.
    let requests = server.requests();
    let resumed = requests
        .iter()
        .filter_map(|r| r.split("Range: bytes=").nth(1))
        .filter_map(|r| {
            r.trim_end_matches('-')
                .split('-')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .any(|from| from > size / 2 - 65_536 && from <= size / 2);
    assert!(resumed, "no range request from the cut: {requests:?}");
    assert!(
        server.sent() < size * 2,
        "{} bytes sent for a file of {size}: replayed? {requests:?}",
        server.sent()
    );

    // Run again: the same windows, replaced, not doubled.
    let o = home.run_config(&config);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_recording_windows(&home.windows("nas"), WINDOWS);
}

/// The same recording as an HLS VOD playlist (`#EXT-X-ENDLIST`): a recording too.
#[test]
fn an_hls_playlist_with_an_end_is_a_recording() {
    let home = Box::new();
    let server = WebServer::start(Site {
        root: home.web(),
        ..Site::default()
    });
    let config = home.source_config("vod", &server.url("hls/index.m3u8"), "");
    let o = home.run_config(&config);
    let log = text(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("tagged once, as a recording"), "{log}");
    assert_recording_windows(&home.windows("vod"), WINDOWS);
    let state = home.state("vod");
    assert_eq!(state["state"], "finished", "{state}");
    assert_eq!(state["reconnects"].as_u64(), Some(0), "{state}");
}

/// A web server that dies while a recording (MP4, or HLS segments) is read: what was
/// tagged stays, the source is reported failed with the reason, and the recording is not
/// read again from the start as if a camera had reconnected.
#[test]
fn a_recording_whose_server_dies_is_reported_not_replayed() {
    let home = Box::new();
    let size = std::fs::metadata(home.web().join("rec.mp4")).unwrap().len();
    for (name, path) in [("nas", "stream.mp4"), ("vod", "hls/index.m3u8")] {
        let server = WebServer::start(Site {
            root: home.web(),
            rate: Some(size / 12),
            ..Site::default()
        });
        let config = home.source_config(name, &server.url(path), "");
        let mut daemon = Daemon::start(&config, &[("TZ", "UTC")]);
        let t0 = std::time::Instant::now();
        while home.windows(name).is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{name}: no window in a minute: {} {:?}",
                daemon.log(),
                server.requests()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server.stop();
        let status = daemon.wait_exit(Duration::from_secs(60));
        let log = daemon.log();
        assert!(status.is_some(), "{name}: the run did not end: {log}");
        let rows = home.windows(name);
        assert!(
            !rows.is_empty() && rows.len() < WINDOWS,
            "{name}: {} windows",
            rows.len()
        );
        assert_recording_windows(&rows, rows.len());
        let state = home.state(name);
        assert_eq!(state["state"], "failed", "{name}: {state}");
        assert!(state["reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert_eq!(state["reconnects"].as_u64(), Some(0), "{name}: {state}");
        eprintln!(
            "{name}: {} of {WINDOWS} windows kept, then: {}",
            rows.len(),
            state["reason"]
        );
    }
}

/// An MJPEG camera over HTTP (`multipart/x-mixed-replace`) is live: wall-clock times,
/// reconnects with backoff when the camera goes away, streaming again when it is back.
#[test]
fn an_mjpeg_camera_over_http_is_watched_like_a_camera() {
    let home = Box::new();
    let frames = home.path("frames");
    std::fs::create_dir_all(&frames).unwrap();
    gst(&format!(
        "videotestsrc num-buffers=20 pattern=ball ! video/x-raw,width=320,height=240 ! jpegenc ! multifilesink location={}/f%02d.jpg",
        frames.display()
    ));
    let mut jpegs: Vec<_> = std::fs::read_dir(&frames)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    jpegs.sort();
    assert_eq!(jpegs.len(), 20);
    let site = Site {
        mjpeg: jpegs.iter().map(|p| std::fs::read(p).unwrap()).collect(),
        mjpeg_fps: 10,
        ..Site::default()
    };
    let server = WebServer::start(site.clone());
    let port = server.port;
    let config = home.source_config("porch", &server.url("mjpeg"), "");
    let before = unix_now();
    let mut daemon = Daemon::start(&config, &[("TZ", "UTC")]);
    wait_until(Duration::from_secs(60), "two camera windows", || {
        home.windows("porch").len() >= 2
    });
    let log = daemon.log();
    assert!(
        log.contains("has no known end: treated as a camera"),
        "{log}"
    );

    // The camera goes away: the source backs off and retries instead of ending.
    server.stop();
    wait_until(Duration::from_secs(30), "backing off", || {
        home.state("porch")["state"] == "backing off"
    });
    assert!(daemon.running(), "{}", daemon.log());
    let during = home.windows("porch").len();
    let server = WebServer::start_on(port, site);
    wait_until(Duration::from_secs(60), "windows after the restart", || {
        home.windows("porch").len() >= during + 2
    });
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).unwrap().success());
    drop(server);
    let after = unix_now();

    let rows = home.windows("porch");
    let state = home.state("porch");
    assert!(state["reconnects"].as_u64().unwrap() >= 1, "{state}");
    for r in &rows {
        assert_eq!(r["kind"], "live", "{r}");
        assert!(r["offset_s"].is_null(), "{r}");
        let start = f(r, "start_unix");
        assert!(
            start >= before - 11.0 && start <= after,
            "{start} not in the run"
        );
    }
    // Windows move forward in time across the outage; none is written twice.
    let starts: Vec<f64> = rows.iter().map(|r| f(r, "start_unix")).collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
}

/// `live = true|false` overrides what the stream says: an MP4 told to be live is watched
/// like a camera (wall-clock times) instead of being tagged once.
#[test]
fn the_config_overrides_what_the_stream_says() {
    let home = Box::new();
    let server = WebServer::start(Site {
        root: home.web(),
        ..Site::default()
    });
    let config = home.source_config("forced", &server.url("rec.mp4"), "live = true\n");
    let mut daemon = Daemon::start(&config, &[("TZ", "UTC")]);
    wait_until(Duration::from_secs(60), "a window", || {
        !home.windows("forced").is_empty()
    });
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(20)).unwrap().success());
    let log = daemon.log();
    assert!(!log.contains("tagged once, as a recording"), "{log}");
    for r in home.windows("forced") {
        assert_eq!(r["kind"], "live", "{r}");
    }
}

/// A recording on a web server without a date inside is placed by its `Last-Modified`,
/// as a local file is by its mtime: it ended then, so it started one duration earlier.
#[test]
fn a_recording_without_a_date_is_placed_by_last_modified() {
    let home = Box::new();
    let undated = recording(
        &home.web().join("rec.mp4"),
        &home.web().join("undated.mp4"),
        None,
    );
    // 2026-12-02T10:01:00Z, as a recorder closing the file would leave it.
    let closed = 1_796_200_860u64;
    std::fs::File::options()
        .write(true)
        .open(&undated)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + Duration::from_secs(closed))
        .unwrap();
    let server = WebServer::start(Site {
        root: home.web(),
        ..Site::default()
    });
    let config = home.source_config("nas", &server.url("undated.mp4"), "");
    let o = home.run_config(&config);
    let log = text(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("from=\"mtime\""), "{log}");
    let rows = home.windows("nas");
    assert_recording_windows(&rows, WINDOWS);
    assert_eq!(f(&rows[0], "start_unix"), (closed - RECORDING_S) as f64);
}
