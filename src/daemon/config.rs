//! The daemon's config file: `cliptag.toml` parsed, each section handed to the stage that owns it.
//!
//! Rules:
//! - This file only composes: the raw shape below names each table and the stage type
//!   that reads it; every stage validates its own table (`validate`) and owns the types
//!   it runs with. A new key is added in its stage, then (for a new table) one line here.
//! - Unknown keys and wrong types are errors that name the key and its line (serde's
//!   `deny_unknown_fields` plus toml's spans); a stage's [`Invalid`] gets its line here.
//!   Nothing is silently ignored.
//! - Relative paths are resolved against the config file's directory, so a unit file
//!   can point at `/etc/cliptag/cliptag.toml` and keep `labels = "labels.txt"` beside it.
//! - Secrets (RTSP passwords) are masked once, when a source's location is made
//!   (`ingest::Location`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::settings::{DaemonConfig, DaemonSection};
use crate::classify::{ClassifyConfig, ClassifySection};
use crate::clip::ModelSettings;
use crate::ingest::source::validate_sources;
use crate::ingest::{Sampling, SamplingSection, SourceConfig, SourceSection};
use crate::keyframes::{KeyframeConfig, KeyframeSection, WindowSection};
use crate::settings::{Context, Invalid};
use crate::store::{Retention, RetentionSection};
use crate::Disposition;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: `{key}`{line}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        line: String,
        reason: String,
    },
}

impl ConfigError {
    pub fn disposition(&self) -> Disposition {
        Disposition::Stop
    }
}

/// A TOML syntax error as shown: its snippet quotes the offending line, which may be a
/// camera's URI with a password in it, and mistyped beyond what URI masking recognises (the
/// very typo may be what broke it). In the snippet, a string holding `:`, `@` or `?` is
/// shown as `"***"`, from its quote to the closing one or to the end of the line; a
/// password-bearing URI has several of these, so one typo cannot hide them all.
fn without_credentials(message: &str) -> String {
    let lines: Vec<String> = message
        .lines()
        .map(|line| {
            let is_snippet = line.split_once(" | ").is_some_and(|(n, _)| {
                !n.trim().is_empty() && n.trim().chars().all(|c| c.is_ascii_digit())
            });
            if !is_snippet {
                return line.to_string();
            }
            let (number, content) = line.split_once(" | ").unwrap_or((line, ""));
            let mut out = format!("{number} | ");
            let mut rest = content;
            while let Some(open) = rest.find('"') {
                out.push_str(&rest[..=open]);
                let after = &rest[open + 1..];
                let close = after.find('"').unwrap_or(after.len());
                let value = &after[..close];
                if value.contains([':', '@', '?']) {
                    out.push_str("***");
                } else {
                    out.push_str(value);
                }
                out.push_str(&after[close..(close + 1).min(after.len())]);
                rest = &after[(close + 1).min(after.len())..];
            }
            out.push_str(rest);
            out
        })
        .collect();
    crate::ingest::uri::mask_uris_in(&lines.join("\n"))
}

/// Exactly what the TOML may contain: each table is its stage's own section type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    model: ModelSettings,
    labels: PathBuf,
    database: PathBuf,
    #[serde(default)]
    sampling: SamplingSection,
    #[serde(default)]
    window: WindowSection,
    #[serde(default)]
    keyframes: KeyframeSection,
    #[serde(default)]
    classify: ClassifySection,
    #[serde(default, rename = "source")]
    sources: Vec<SourceSection>,
    #[serde(default)]
    daemon: DaemonSection,
    #[serde(default)]
    retention: RetentionSection,
}

/// A validated config: every stage's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub model: ModelSettings,
    pub labels_path: PathBuf,
    pub database: PathBuf,
    pub sampling: Sampling,
    pub window: Duration,
    pub keyframes: KeyframeConfig,
    pub classify: ClassifyConfig,
    pub sources: Vec<SourceConfig>,
    pub daemon: DaemonConfig,
    pub retention: Retention,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// `path` is used for messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: without_credentials(e.to_string().trim_end()),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let context = Context { base: &base };
        let located = |e: Invalid| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: e
                .span
                .map(|s| format!(" (line {})", line_of(text, s.start)))
                .unwrap_or_default(),
            key: e.key,
            // A reason may quote a value, and a mistyped camera URI still holds a password.
            reason: crate::ingest::uri::mask_uris_in(&e.reason),
        };
        Ok(Config {
            path: path.to_path_buf(),
            model: raw.model.resolved(&base),
            labels_path: context.path(&raw.labels),
            database: context.path(&raw.database),
            sampling: raw.sampling.validate().map_err(located)?,
            window: raw.window.validate().map_err(located)?,
            keyframes: raw.keyframes.validate().map_err(located)?,
            classify: raw.classify.validate(&context).map_err(located)?,
            sources: validate_sources(raw.sources, &context).map_err(located)?,
            daemon: raw.daemon.validate().map_err(located)?,
            retention: raw.retention.validate().map_err(located)?,
        })
    }
}

/// The config file's conventional place on an installed box.
pub const SYSTEM_CONFIG: &str = "/etc/cliptag/cliptag.toml";

/// Where a command finds its config when not given one: `$CLIPTAG_CONFIG`, else
/// [`SYSTEM_CONFIG`] when it exists.
pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("CLIPTAG_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.is_file()))
}

impl Config {
    /// A config for tagging files without a config file: this model and labels file into
    /// this database, the defaults for everything else.
    pub fn for_files(model: ModelSettings, labels: PathBuf, database: PathBuf) -> Config {
        Config {
            path: PathBuf::new(),
            model,
            labels_path: labels,
            database,
            sampling: Sampling::Fps(1.0),
            window: Duration::from_secs(10),
            keyframes: KeyframeConfig::default(),
            classify: ClassifyConfig::default(),
            sources: Vec::new(),
            daemon: DaemonConfig::default(),
            retention: Retention::default(),
        }
    }

    /// This config with its sources replaced by `files`: each file its own source, named
    /// and keyed by its path.
    pub fn with_files(mut self, files: &[PathBuf]) -> Config {
        self.sources = files
            .iter()
            .map(|f| {
                let path = f.display().to_string();
                SourceConfig::new(&path, &path)
            })
            .collect();
        self
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "labels = \"labels.txt\"\ndatabase = \"db.sqlite\"\n[model]\ndir = \"m\"\n";

    #[test]
    fn defaults_apply_and_paths_resolve_against_config_dir() {
        let c = Config::parse(MINIMAL, Path::new("/etc/cliptag/cliptag.toml")).unwrap();
        assert_eq!(c.labels_path, Path::new("/etc/cliptag/labels.txt"));
        assert_eq!(c.model.dir, Path::new("/etc/cliptag/m"));
        assert_eq!(c.sampling, Sampling::Fps(1.0));
        assert_eq!(c.window, Duration::from_secs(10));
        assert_eq!(c.classify.top_k, 3);
        assert_eq!(c.model.variant, crate::clip::ModelVariant::Auto);
        assert_eq!(c.model.device, crate::clip::DeviceChoice::Auto);
    }

    #[test]
    fn device_is_one_of_the_known_names() {
        let text = MINIMAL.replace("dir = \"m\"", "dir = \"m\"\ndevice = \"cuda\"");
        let c = Config::parse(&text, Path::new("c.toml")).unwrap();
        assert_eq!(c.model.device, crate::clip::DeviceChoice::Cuda);
        let text = MINIMAL.replace("dir = \"m\"", "dir = \"m\"\ndevice = \"gpu\"");
        let e = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gpu") && e.contains("cuda") && e.contains("line 5"),
            "{e}"
        );
    }

    #[test]
    fn probe_head_is_a_path_beside_the_config() {
        let text = format!("{MINIMAL}[classify]\nhead = \"heads/probe.json\"\n");
        let c = Config::parse(&text, Path::new("/etc/cliptag/c.toml")).unwrap();
        assert_eq!(
            c.classify.head.as_deref(),
            Some(Path::new("/etc/cliptag/heads/probe.json"))
        );
        let text = format!("{MINIMAL}[classify]\nhead = \" \"\n");
        let e = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("classify.head") && e.contains("probe head"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = format!("{MINIMAL}[sampling]\nfsp = 2.0\n");
        let e = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fsp"), "{e}");
        assert!(e.contains("line 6"), "{e}");
    }

    #[test]
    fn wrong_type_is_named_with_its_line() {
        let text = format!("{MINIMAL}[sampling]\nevery_nth_frame = \"fifty\"\n");
        let e = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 6"), "{e}");
        assert!(
            e.contains("every_nth_frame") || e.contains("integer"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_name_key_and_line() {
        let text = format!("{MINIMAL}[sampling]\nfps = -1.0\n");
        let e = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sampling.fps") && e.contains("line 6"), "{e}");
        let text = format!("{MINIMAL}[sampling]\nfps = 1.0\nevery_nth_frame = 5\n");
        assert!(Config::parse(&text, Path::new("c.toml")).is_err());
        let text = format!("{MINIMAL}[classify]\nprompt_templates = [\"no placeholder\"]\n");
        let e = Config::parse(&text, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("prompt_templates"), "{e}");
    }

    #[test]
    fn sources_resolve_and_duplicates_are_rejected() {
        let text = format!(
            "{MINIMAL}[[source]]\nname = \"a\"\nuri = \"clips/a.mp4\"\n[[source]]\nname = \"cam\"\nuri = \"rtsp://u:p@cam/1\"\n"
        );
        let c = Config::parse(&text, Path::new("/x/c.toml")).unwrap();
        assert_eq!(c.sources[0].location.secret(), "/x/clips/a.mp4");
        assert_eq!(c.sources[1].location.secret(), "rtsp://u:p@cam/1");
        assert_eq!(c.sources[1].location.shown(), "rtsp://u:***@cam/1");
        let dup = format!("{MINIMAL}[[source]]\nname = \"a\"\nuri = \"x\"\n[[source]]\nname = \"a\"\nuri = \"y\"\n");
        let e = Config::parse(&dup, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate") && e.contains("line 9"), "{e}");
    }

    #[test]
    fn daemon_retention_and_source_options_parse_and_validate() {
        let text = format!(
            "{MINIMAL}[daemon]\nshutdown_timeout = \"3s\"\nbackoff_initial = \"250ms\"\nbackoff_max = \"30s\"\nqueue = 2\n[retention]\ndays = 7\nmax_db_mb = 100\nmin_free_mb = 64\n[[source]]\nname = \"cam\"\nuri = \"rtsp://cam/1\"\ntransport = \"udp\"\n[[source]]\nname = \"demo\"\nuri = \"demo.mp4\"\nloop = true\nrealtime = true\n"
        );
        let c = Config::parse(&text, Path::new("/x/c.toml")).unwrap();
        assert_eq!(c.daemon.shutdown_timeout, Duration::from_secs(3));
        assert_eq!(c.daemon.backoff_initial, Duration::from_millis(250));
        assert_eq!(c.daemon.queue, 2);
        assert_eq!(c.daemon.stall_timeout, crate::ingest::DEFAULT_STALL_TIMEOUT);
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(c.retention.max_db_bytes, Some(100 * 1024 * 1024));
        assert_eq!(c.retention.min_free_bytes, Some(64 * 1024 * 1024));
        assert_eq!(c.sources[0].transport, crate::ingest::RtspTransport::Udp);
        assert!(c.sources[0].is_live() && c.sources[0].paced(true));
        assert!(c.sources[1].looped && c.sources[1].realtime && !c.sources[1].is_live());
        assert!(c.sources[1].paced(false));
        // HTTP serves recordings and cameras alike: the stream decides, unless told.
        let web = format!(
            "{MINIMAL}[[source]]\nname = \"nas\"\nuri = \"http://nas/a.mp4\"\n[[source]]\nname = \"mjpeg\"\nuri = \"http://cam/video\"\nlive = true\n[[source]]\nname = \"file\"\nuri = \"a.mp4\"\nlive = true\n"
        );
        let c = Config::parse(&web, Path::new("/x/c.toml")).unwrap();
        let hints: Vec<_> = c.sources.iter().map(|s| s.live_hint()).collect();
        assert_eq!(hints, [None, Some(true), Some(true)]);
        let cam = format!("{MINIMAL}[[source]]\nname = \"desk\"\nuri = \"/dev/video2\"\n");
        let c = Config::parse(&cam, Path::new("c.toml")).unwrap();
        assert_eq!(c.sources[0].location.secret(), "v4l2:///dev/video2");
        assert!(c.sources[0].is_live());

        let bad = |extra: &str| {
            Config::parse(&format!("{MINIMAL}{extra}"), Path::new("c.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = bad("[daemon]\nshutdown_timeout = \"soon\"\n");
        assert!(
            e.contains("daemon.shutdown_timeout") && e.contains("line 6"),
            "{e}"
        );
        let e = bad("[daemon]\nbackoff_initial = \"10s\"\nbackoff_max = \"1s\"\n");
        assert!(e.contains("daemon.backoff_max"), "{e}");
        let e = bad("[daemon]\nretries = 3\n");
        assert!(e.contains("retries"), "{e}");
        let e = bad("[retention]\ndays = -1\n");
        assert!(e.contains("retention.days"), "{e}");
        let e = bad("[[source]]\nname = \"c\"\nuri = \"rtsp://c\"\ntransport = \"quic\"\n");
        assert!(e.contains("source.transport") && e.contains("quic"), "{e}");
    }
}
