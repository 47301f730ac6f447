//! A full disk, for real: the database on a small tmpfs mounted by the test, filled by a
//! filler file as another program (or the database itself) would fill an SD card.
//!
//! Mounting needs root (CAP_SYS_ADMIN), which CI has: `.ci/run` runs as root on a fresh
//! Debian. These tests fail, rather than pass silently, where they cannot mount.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::child::Daemon;
use crate::common::home::{text, Home};
use crate::common::windows::copy_windows;
use crate::common::{clips, tiny_model};

/// A tmpfs of `mib` MiB mounted at a fresh directory, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(at: PathBuf, mib: u32) -> SmallDisk {
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "tmpfs",
            ])
            .arg(&at)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a {mib} MiB tmpfs at {} needs root (CAP_SYS_ADMIN), as CI has: {}",
            at.display(),
            text(&out.stderr)
        );
        SmallDisk { dir: at }
    }

    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.dir)
            .output()
            .unwrap();
        text(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    }

    /// Writes `filler` until the file system refuses another byte.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        for size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
            let chunk = vec![0xA5u8; size];
            while f.write_all(&chunk).is_ok() {}
        }
        let _ = f.sync_all();
        assert!(self.free() < 4096, "{} bytes still free", self.free());
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A box whose database lives on the small disk; one looping clip cut into 1 s windows,
/// so the database grows by about ten windows a second.
fn config(home: &Home, retention: &str) -> PathBuf {
    let text = format!(
        "labels = \"labels.txt\"\ndatabase = \"disk/tags.db\"\n\n[model]\ndir = {:?}\nthreads = 1\n\n\
         [sampling]\nfps = 4.0\n\n[window]\nseconds = 1.0\n\n[daemon]\nshutdown_timeout = \"5s\"\n\n{retention}\n\n\
         [[source]]\nname = \"loop\"\nuri = {:?}\nloop = true\n",
        tiny_model(),
        clips().join("h264.mkv"),
    );
    let path = home.path("cliptag.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn db(home: &Home) -> rusqlite::Connection {
    // Read-write, as `cliptag query` opens it: a read-only connection that is the last
    // to close would leave the WAL index behind, and the box below that "starts with a
    // full disk" would not be starting from a clean stop.
    let c = rusqlite::Connection::open_with_flags(
        home.path("disk/tags.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
    )
    .unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c
}

fn windows(home: &Home) -> i64 {
    db(home)
        .query_row("SELECT count(*) FROM segments", [], |r| r.get(0))
        .unwrap()
}

fn integrity(path: &Path) -> String {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn wait_for_log(daemon: &Daemon, line: &str) {
    wait(daemon, line, || daemon.log().contains(line));
}

/// Waits a minute, showing the daemon's log when it times out.
fn wait(daemon: &Daemon, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "timed out waiting for {what}; the daemon's log:\n{}",
        daemon.log()
    );
}

/// Filled while running: tagging pauses (said in the log and by `cliptag status`), nothing
/// committed is lost, and it resumes by itself when room returns. Then a box that starts
/// with a full disk waits for room instead of exiting, and starts when there is some.
#[test]
fn a_full_disk_pauses_tagging_until_room_returns() {
    let home = Home::new("a cat\na dog\na car\n");
    let disk = SmallDisk::mount(home.path("disk"), 8);
    let config = config(&home, "");
    let mut daemon = Daemon::start(&config, &[]);
    wait(&daemon, "20 windows", || {
        home.path("disk/tags.db").exists() && windows(&home) >= 20
    });

    let filler = disk.fill();
    wait_for_log(
        &daemon,
        "tagging paused: the disk holding the database is full",
    );
    let at_pause = windows(&home);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        windows(&home),
        at_pause,
        "nothing is committed while paused"
    );
    assert!(daemon.running(), "a full disk does not stop the daemon");
    let status = home.cliptag(&["status", "--config", config.to_str().unwrap()]);
    assert!(
        text(&status.stdout).contains("the disk is full: a running daemon has paused tagging"),
        "{}",
        text(&status.stdout)
    );

    std::fs::remove_file(&filler).unwrap();
    wait_for_log(&daemon, "disk space is back");
    wait(&daemon, "tagging to go on", || {
        windows(&home) > at_pause + 20
    });
    daemon.signal("TERM");
    let exit = daemon.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(exit.success(), "{exit:?}\n{}", daemon.log());
    let log = daemon.log();
    assert_eq!(
        log.matches("tagging paused:").count(),
        1,
        "one pause, said once: {log}"
    );
    assert_eq!(integrity(&home.path("disk/tags.db")), "ok");
    let after_first_run = windows(&home);
    assert!(after_first_run > at_pause);

    // Stopped cleanly, so the WAL index is gone: with no byte free even opening fails.
    let filler = disk.fill();
    let mut daemon = Daemon::start(&config, &[]);
    wait_for_log(&daemon, "waiting for room");
    std::thread::sleep(Duration::from_secs(2));
    assert!(daemon.running(), "{}", daemon.log());
    std::fs::remove_file(&filler).unwrap();
    wait_for_log(&daemon, "room on the disk: starting");
    wait(&daemon, "tagging after the wait", || {
        windows(&home) > after_first_run + 10
    });
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(30)).unwrap().success());
    assert_eq!(integrity(&home.path("disk/tags.db")), "ok");

    // SIGTERM while waiting for room ends the run at once, as temporary trouble (75).
    let filler = disk.fill();
    let mut daemon = Daemon::start(&config, &[]);
    wait_for_log(&daemon, "waiting for room");
    daemon.signal("TERM");
    let exit = daemon.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(exit.code(), Some(75), "{}", daemon.log());
    assert!(daemon.log().contains("stopped while waiting for room"));
    std::fs::remove_file(&filler).unwrap();
    assert!(windows(&home) > after_first_run);
}

/// With `min_free_mb`, a disk filled by someone else is made room on by deleting the oldest
/// windows (the reserve file gives retention the room to start), and tagging goes on with
/// no help: the newest windows are kept, the oldest go first.
#[test]
fn min_free_deletes_the_oldest_windows_to_make_room() {
    let home = Home::new("a cat\na dog\na car\n");
    let disk = SmallDisk::mount(home.path("disk"), 16);
    let config = config(&home, "[retention]\nmin_free_mb = 2\n");
    let mut daemon = Daemon::start(&config, &[]);
    wait(&daemon, "20 windows", || {
        home.path("disk/tags.db").exists() && windows(&home) >= 20
    });
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(30)).unwrap().success());
    let reserve = home.path("disk/tags.db-reserve");
    assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 1024 * 1024);

    // History: the real windows copied back in time, a day per copy, so the
    // database holds far more than min_free_mb of old windows.
    let history_days = 500;
    copy_windows(&home.path("disk/tags.db"), history_days, |c| match c {
        "start_ms" | "end_ms" => Some(format!("{c} + n * 100000000")),
        "processed_at" | "wall_start" | "wall_end" => Some(format!("{c} - n * 86400.0")),
        _ => None,
    });
    let real_newest: f64 = db(&home)
        .query_row("SELECT max(processed_at) FROM segments", [], |r| r.get(0))
        .unwrap();
    let old_times = |c: &rusqlite::Connection| -> Vec<f64> {
        c.prepare("SELECT processed_at FROM segments WHERE processed_at < ?1 - 3600 ORDER BY 1")
            .unwrap()
            .query_map([real_newest], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let recent_count = |c: &rusqlite::Connection| -> i64 {
        c.query_row(
            "SELECT count(*) FROM segments WHERE processed_at >= ?1 - 3600",
            [real_newest],
            |r| r.get(0),
        )
        .unwrap()
    };
    let old_before = old_times(&db(&home));
    let recent_before = recent_count(&db(&home));
    assert!(old_before.len() > 2000, "{}", old_before.len());

    let mut daemon = Daemon::start(&config, &[]);
    let new_windows = || -> i64 {
        db(&home)
            .query_row(
                "SELECT count(*) FROM segments WHERE processed_at > ?1",
                [real_newest],
                |r| r.get(0),
            )
            .unwrap()
    };
    wait(&daemon, "tagging", || new_windows() > 10);
    let filler = disk.fill();
    wait_for_log(&daemon, "to keep min_free_mb free on the disk");
    let during = new_windows();
    wait(&daemon, "tagging to go on", || new_windows() > during + 20);
    assert!(daemon.running());
    // Kept within what ten seconds of windows add between two checks.
    assert!(
        disk.free() >= 3 << 19,
        "{} bytes free after retention; the daemon's log:\n{}",
        disk.free(),
        daemon.log()
    );
    daemon.signal("TERM");
    assert!(daemon.wait_exit(Duration::from_secs(30)).unwrap().success());
    let log = daemon.log();
    // The filler took every byte at once. Either the writer's check after a batch saw
    // the disk short and retention made room before a commit failed, or a commit failed
    // first: then tagging paused, the reserve file gave retention its room, and the pause
    // ended by itself with the reserve written again. Both are right; which one comes
    // first depends on how much room the WAL had left.
    if log.contains("tagging paused") {
        for line in [
            "deleted the reserve file",
            "disk space is back",
            "reserve file written",
        ] {
            assert!(log.contains(line), "no {line:?} in the log:\n{log}");
        }
    }
    assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 1024 * 1024);

    let c = db(&home);
    let old_after = old_times(&c);
    assert!(
        old_after.len() < old_before.len(),
        "{} of {} old windows left",
        old_after.len(),
        old_before.len()
    );
    // Oldest first: what is left of the history is its newest stretch, exactly.
    assert_eq!(
        old_after[..],
        old_before[old_before.len() - old_after.len()..],
        "retention deleted windows that were not the oldest"
    );
    assert!(
        recent_count(&c) > recent_before,
        "the newest windows are kept and new ones were added"
    );
    drop(c);
    assert_eq!(integrity(&home.path("disk/tags.db")), "ok");
    drop(filler);
}
