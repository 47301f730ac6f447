//! A user's box for the tests that drive the binary as a user would: a directory of its
//! own, a labels file, a config for the tiny model, and the commands run in it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{cliptag, tiny_model};

/// A box of its own for one test: a temporary directory with a labels file, a config
/// for the tiny model and the commands a user would type in it.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new(labels: &str) -> Home {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("labels.txt"), labels).unwrap();
        Home { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> String {
        self.path("tags.db").display().to_string()
    }

    /// A config for the tiny model (1 fps, 10 s windows, quick backoff); `body` adds tables.
    pub fn config(&self, body: &str) -> PathBuf {
        self.config_with("", body)
    }

    /// [`Home::config`] with more `[daemon]` lines.
    pub fn config_with(&self, daemon: &str, body: &str) -> PathBuf {
        let text = format!(
            "labels = \"labels.txt\"\ndatabase = \"tags.db\"\n\n[model]\ndir = {:?}\nthreads = 1\n\n[sampling]\nfps = 1.0\n\n[window]\nseconds = 10.0\n\n[daemon]\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"\n{daemon}\n\n{body}",
            tiny_model()
        );
        let path = self.path("cliptag.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `cliptag ARGS` in this box's directory.
    pub fn cliptag(&self, args: &[&str]) -> Output {
        cliptag()
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("CLIPTAG_CONFIG")
            .env_remove("JOURNAL_STREAM")
            .env("TZ", "UTC")
            .output()
            .unwrap()
    }

    /// `cliptag run --model tiny --labels labels.txt --db tags.db ARGS`.
    pub fn run_files(&self, args: &[&str]) -> Output {
        let model = tiny_model().display().to_string();
        let mut all = vec![
            "run",
            "--model",
            &model,
            "--labels",
            "labels.txt",
            "--db",
            "tags.db",
        ];
        all.extend_from_slice(args);
        let o = self.cliptag(&all);
        assert!(o.status.success(), "run failed: {}", text(&o.stderr));
        o
    }

    /// `cliptag query --db tags.db --json ARGS`, parsed.
    pub fn query(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let db = self.db();
        let mut all = vec!["query", "--db", &db, "--json"];
        all.extend_from_slice(args);
        let o = self.cliptag(&all);
        assert!(o.status.success(), "query {args:?}: {}", text(&o.stderr));
        json_lines(&o.stdout)
    }

    /// `cliptag run --config CONFIG` to its end, logging at info level.
    pub fn run_config(&self, config: &Path) -> Output {
        cliptag()
            .args(["run", "--config", config.to_str().unwrap()])
            .current_dir(self.dir.path())
            .env("CLIPTAG_LOG", "info,tract_linalg=warn")
            .env_remove("JOURNAL_STREAM")
            .env("TZ", "UTC")
            .output()
            .unwrap()
    }

    /// `cliptag status --db tags.db --json`, parsed: one value per source (none before
    /// the daemon made its database).
    pub fn states(&self) -> Vec<serde_json::Value> {
        let db = self.db();
        json_lines(&self.cliptag(&["status", "--db", &db, "--json"]).stdout)
    }

    /// The state of `source` (`Null` while there is none).
    pub fn state(&self, source: &str) -> serde_json::Value {
        self.states()
            .into_iter()
            .find(|s| s["source"] == source)
            .unwrap_or_default()
    }

    /// `cliptag query --db tags.db ARGS`, expected to be refused: its error.
    pub fn refused(&self, args: &[&str]) -> String {
        let db = self.db();
        let mut all = vec!["query", "--db", &db];
        all.extend_from_slice(args);
        let o = self.cliptag(&all);
        assert_eq!(o.status.code(), Some(1), "query {args:?} was not refused");
        assert!(o.stdout.is_empty());
        text(&o.stderr)
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    text(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

pub fn f(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Seconds from 1904-01-01 (MP4's epoch) to 1970-01-01.
pub const MP4_EPOCH_OFFSET: u64 = 2_082_844_800;

/// A copy of `clip` (an MP4 written by GStreamer's qtmux/mp4mux) whose movie header says it
/// was recorded at `unix` seconds, or carries no date at all (`None`, a zero creation time).
pub fn recording(clip: &Path, to: &Path, unix: Option<u64>) -> PathBuf {
    let mut data = std::fs::read(clip).unwrap();
    let at = data
        .windows(4)
        .position(|w| w == b"mvhd")
        .expect("an MP4 has a movie header");
    assert_eq!(data[at + 4], 0, "qtmux writes version-0 movie headers");
    let value = unix.map_or(0, |t| t + MP4_EPOCH_OFFSET) as u32;
    // mvhd: size and type (8 bytes before `at + 4`), version + flags (4), creation time (4).
    data[at + 8..at + 12].copy_from_slice(&value.to_be_bytes());
    std::fs::write(to, data).unwrap();
    to.to_path_buf()
}
