//! Configuration: `cliptag.toml` parsed into a raw serde shape, then validated into [`Config`].
//!
//! Rules:
//! - Unknown keys and wrong types are errors that name the key and its line (serde's
//!   `deny_unknown_fields` plus toml's spans); nothing is silently ignored.
//! - Relative paths are resolved against the config file's directory, so a unit file
//!   can point at `/etc/cliptag/cliptag.toml` and keep `labels = "labels.txt"` beside it.
//! - Secrets (RTSP passwords) are masked by [`mask_uri`] whenever a URI is logged or stored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::clip::Layout;
use crate::ingest::Sampling;
use crate::Disposition;

/// CLIP's own zero-shot template, followed by a small ensemble for video frames.
/// Averaging normalised prompt embeddings is CLIP's prompt ensembling; frames from
/// cameras are often blurry or low resolution, hence those variants.
pub const DEFAULT_PROMPT_TEMPLATES: &[&str] = &[
    "a photo of a {}.",
    "a video frame of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the {}.",
];

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

/// Which ONNX files of a model directory to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelVariant {
    /// The int8 files where the directory has both (the fast path), else fp32.
    Auto,
    /// `onnx/vision_model.onnx`, `onnx/text_model.onnx`
    Fp32,
    /// `onnx/*_quantized.onnx` (int8 weights)
    Quantized,
    /// `onnx/*_fp16.onnx` (half-precision weights, widened to f32 at load)
    Fp16,
}

impl ModelVariant {
    pub fn file_suffix(self) -> &'static str {
        match self {
            ModelVariant::Auto | ModelVariant::Fp32 => "",
            ModelVariant::Quantized => "_quantized",
            ModelVariant::Fp16 => "_fp16",
        }
    }
}

/// Where the CLIP encoders run (`[model] device`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// An NVIDIA GPU when the build has the `cuda` feature and one is usable, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// The GPU or nothing: fails to start when CUDA is unusable.
    Cuda,
}

// ---- raw shape, exactly what the TOML may contain ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    model: RawModel,
    labels: toml::Spanned<PathBuf>,
    database: PathBuf,
    #[serde(default)]
    sampling: RawSampling,
    #[serde(default)]
    window: RawWindow,
    #[serde(default)]
    keyframes: RawKeyframes,
    #[serde(default)]
    classify: RawClassify,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    retention: RawRetention,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    shutdown_timeout: Option<toml::Spanned<String>>,
    backoff_initial: Option<toml::Spanned<String>>,
    backoff_max: Option<toml::Spanned<String>>,
    stall_timeout: Option<toml::Spanned<String>>,
    queue: Option<toml::Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    days: Option<toml::Spanned<f64>>,
    max_db_mb: Option<toml::Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    dir: PathBuf,
    #[serde(default = "default_variant")]
    variant: ModelVariant,
    #[serde(default)]
    layout: LayoutChoice,
    /// 0 = all cores.
    #[serde(default)]
    threads: usize,
    #[serde(default)]
    device: DeviceChoice,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LayoutChoice {
    #[default]
    Auto,
    Xenova,
    Immich,
}

fn default_variant() -> ModelVariant {
    ModelVariant::Auto
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSampling {
    fps: Option<toml::Spanned<f64>>,
    every_nth_frame: Option<toml::Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    seconds: Option<toml::Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyframes {
    select: Option<Selection>,
    k: Option<toml::Spanned<usize>>,
    aggregate: Option<crate::classify::Aggregation>,
    skip_unchanged: Option<bool>,
    scene_threshold: Option<toml::Spanned<f32>>,
}

/// Which frames of a window CLIP sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Every sampled frame.
    All,
    /// PCA + k-means keyframes (paper 000).
    Cluster,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyframeConfig {
    pub select: Selection,
    pub k: usize,
    pub aggregate: crate::classify::Aggregation,
    /// Reuse the previous window's embedding when the scene did not change.
    pub skip_unchanged: bool,
    pub scene_threshold: f32,
}

impl Default for KeyframeConfig {
    fn default() -> Self {
        KeyframeConfig {
            select: Selection::Cluster,
            k: 5,
            aggregate: crate::classify::Aggregation::Mean,
            skip_unchanged: true,
            scene_threshold: crate::keyframes::DEFAULT_SCENE_THRESHOLD,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClassify {
    top_k: Option<toml::Spanned<usize>>,
    min_probability: Option<toml::Spanned<f32>>,
    prompt_templates: Option<toml::Spanned<Vec<String>>>,
    head: Option<toml::Spanned<String>>,
    label_embeddings: Option<toml::Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: toml::Spanned<String>,
    uri: toml::Spanned<String>,
    #[serde(default, rename = "loop")]
    looped: bool,
    #[serde(default)]
    realtime: bool,
    transport: Option<toml::Spanned<String>>,
}

// ---- validated shape ----

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub model: ModelConfig,
    pub labels_path: PathBuf,
    pub database: PathBuf,
    pub sampling: Sampling,
    pub window: Duration,
    pub keyframes: KeyframeConfig,
    pub classify: ClassifyConfig,
    pub sources: Vec<SourceConfig>,
    pub daemon: DaemonConfig,
    pub retention: RetentionConfig,
}

/// How the long-running service behaves around its sources.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// After SIGTERM: how long windows in flight may take to reach the database.
    pub shutdown_timeout: Duration,
    /// First reconnect delay of a failed live source; doubled per failure up to the cap.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A pipeline that yields no frame, error or end of stream for this long is restarted.
    pub stall_timeout: Duration,
    /// Windows waiting for inference across all sources; live sources drop when it is full.
    pub queue: usize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            shutdown_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stall_timeout: crate::ingest::DEFAULT_STALL_TIMEOUT,
            queue: 8,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RetentionConfig {
    pub max_age: Option<Duration>,
    pub max_db_bytes: Option<u64>,
}

/// How RTSP media travels. TCP (interleaved) is the default: it passes NAT and firewalls
/// and does not lose packets on busy Wi-Fi, which matters more here than latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub dir: PathBuf,
    pub variant: ModelVariant,
    /// None: detect from the directory.
    pub layout: Option<Layout>,
    pub threads: usize,
    pub device: DeviceChoice,
}

#[derive(Debug, Clone)]
pub struct ClassifyConfig {
    pub top_k: usize,
    pub min_probability: f32,
    pub prompt_templates: Vec<String>,
    /// A probe head from `cliptag-tune probe` that scores the labels instead of the cosine
    /// softmax; its classes must be the labels file's labels.
    pub head: Option<PathBuf>,
    /// Label embeddings from `cliptag-tune prompts`, used instead of encoding the prompts of
    /// the labels they cover.
    pub label_embeddings: Option<PathBuf>,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        ClassifyConfig {
            top_k: 3,
            min_probability: 0.0,
            prompt_templates: DEFAULT_PROMPT_TEMPLATES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            head: None,
            label_embeddings: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    /// A `scheme://` URI, or an absolute file path resolved from what the user wrote.
    pub uri: String,
    /// Start a file again at its end instead of finishing (test and demo sources).
    pub looped: bool,
    /// Deliver a file's frames at their playback rate, as a camera would.
    pub realtime: bool,
    pub transport: RtspTransport,
}

impl SourceConfig {
    pub fn new(name: &str, uri: &str) -> SourceConfig {
        SourceConfig {
            name: name.to_string(),
            uri: uri.to_string(),
            looped: false,
            realtime: false,
            transport: RtspTransport::default(),
        }
    }

    /// Cameras and network streams: they end only by failing, and never wait for us.
    pub fn is_live(&self) -> bool {
        let scheme = self
            .uri
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        matches!(
            scheme.as_str(),
            "rtsp" | "rtsps" | "rtspt" | "rtspu" | "v4l2" | "http" | "https" | "udp" | "srt"
        )
    }

    /// Frames arrive at playback rate and must be dropped, not queued, when we fall behind.
    pub fn paced(&self) -> bool {
        self.realtime || self.is_live()
    }
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
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let invalid = |key: &str, span: Option<std::ops::Range<usize>>, reason: String| {
            let line = span
                .map(|s| format!(" (line {})", line_of(text, s.start)))
                .unwrap_or_default();
            ConfigError::Invalid {
                path: path.to_path_buf(),
                key: key.to_string(),
                line,
                reason,
            }
        };

        let sampling = match (raw.sampling.fps, raw.sampling.every_nth_frame) {
            (Some(f), Some(n)) => {
                return Err(invalid(
                    "sampling",
                    Some(f.span().start.min(n.span().start)..f.span().end),
                    "set either `fps` or `every_nth_frame`, not both".into(),
                ))
            }
            (Some(f), None) => {
                let v = *f.get_ref();
                if !(v.is_finite() && v > 0.0 && v <= 1000.0) {
                    return Err(invalid(
                        "sampling.fps",
                        Some(f.span()),
                        format!("expected a frame rate in (0, 1000], got {v}"),
                    ));
                }
                Sampling::Fps(v)
            }
            (None, Some(n)) => {
                if *n.get_ref() == 0 {
                    return Err(invalid(
                        "sampling.every_nth_frame",
                        Some(n.span()),
                        "expected a positive frame count".into(),
                    ));
                }
                Sampling::EveryNth(*n.get_ref())
            }
            (None, None) => Sampling::Fps(1.0),
        };

        let window = match raw.window.seconds {
            None => Duration::from_secs(10),
            Some(s) => {
                let v = *s.get_ref();
                if !(v.is_finite() && (0.1..=86_400.0).contains(&v)) {
                    return Err(invalid(
                        "window.seconds",
                        Some(s.span()),
                        format!("expected seconds in [0.1, 86400], got {v}"),
                    ));
                }
                Duration::from_secs_f64(v)
            }
        };

        let mut keyframes = KeyframeConfig::default();
        if let Some(s) = raw.keyframes.select {
            keyframes.select = s;
        }
        if let Some(k) = raw.keyframes.k {
            if !(1..=64).contains(k.get_ref()) {
                return Err(invalid(
                    "keyframes.k",
                    Some(k.span()),
                    format!("expected 1 to 64 keyframes, got {}", k.get_ref()),
                ));
            }
            keyframes.k = *k.get_ref();
        }
        if let Some(a) = raw.keyframes.aggregate {
            keyframes.aggregate = a;
        }
        if let Some(s) = raw.keyframes.skip_unchanged {
            keyframes.skip_unchanged = s;
        }
        if let Some(t) = raw.keyframes.scene_threshold {
            if !(t.get_ref().is_finite() && *t.get_ref() >= 0.0) {
                return Err(invalid(
                    "keyframes.scene_threshold",
                    Some(t.span()),
                    "expected a non-negative distance".into(),
                ));
            }
            keyframes.scene_threshold = *t.get_ref();
        }

        let mut classify = ClassifyConfig::default();
        if let Some(k) = raw.classify.top_k {
            if *k.get_ref() == 0 {
                return Err(invalid(
                    "classify.top_k",
                    Some(k.span()),
                    "expected at least 1".into(),
                ));
            }
            classify.top_k = *k.get_ref();
        }
        if let Some(p) = raw.classify.min_probability {
            let v = *p.get_ref();
            if !(0.0..=1.0).contains(&v) {
                return Err(invalid(
                    "classify.min_probability",
                    Some(p.span()),
                    format!("expected a probability in [0, 1], got {v}"),
                ));
            }
            classify.min_probability = v;
        }
        if let Some(t) = raw.classify.prompt_templates {
            let span = t.span();
            let templates = t.into_inner();
            if templates.is_empty() {
                return Err(invalid(
                    "classify.prompt_templates",
                    Some(span),
                    "expected at least one template".into(),
                ));
            }
            if let Some(bad) = templates.iter().find(|t| t.matches("{}").count() != 1) {
                return Err(invalid(
                    "classify.prompt_templates",
                    Some(span),
                    format!("template {bad:?} must contain `{{}}` exactly once"),
                ));
            }
            classify.prompt_templates = templates;
        }
        if let Some(h) = raw.classify.head {
            if h.get_ref().trim().is_empty() {
                return Err(invalid(
                    "classify.head",
                    Some(h.span()),
                    "expected the path of a probe head file".into(),
                ));
            }
            classify.head = Some(base.join(h.get_ref()));
        }
        if let Some(l) = raw.classify.label_embeddings {
            if l.get_ref().trim().is_empty() {
                return Err(invalid(
                    "classify.label_embeddings",
                    Some(l.span()),
                    "expected the path of a label-embedding file".into(),
                ));
            }
            classify.label_embeddings = Some(base.join(l.get_ref()));
        }

        let mut sources: Vec<SourceConfig> = Vec::new();
        for s in raw.sources {
            let name = s.name.get_ref().trim().to_string();
            if name.is_empty() {
                return Err(invalid(
                    "source.name",
                    Some(s.name.span()),
                    "must not be empty".into(),
                ));
            }
            if sources.iter().any(|o| o.name == name) {
                return Err(invalid(
                    "source.name",
                    Some(s.name.span()),
                    format!("duplicate source name {name:?}"),
                ));
            }
            let written = s.uri.get_ref().trim();
            // A bare device path is what people copy from `v4l2-ctl --list-devices`.
            let uri = if written.starts_with("/dev/video") {
                format!("v4l2://{written}")
            } else {
                resolve_uri(written, &base)
            };
            if uri.is_empty() {
                return Err(invalid(
                    "source.uri",
                    Some(s.uri.span()),
                    "must not be empty".into(),
                ));
            }
            let transport = match s.transport {
                None => RtspTransport::Tcp,
                Some(t) => match t.get_ref().to_ascii_lowercase().as_str() {
                    "tcp" => RtspTransport::Tcp,
                    "udp" => RtspTransport::Udp,
                    other => {
                        return Err(invalid(
                            "source.transport",
                            Some(t.span()),
                            format!("expected \"tcp\" or \"udp\", got {other:?}"),
                        ))
                    }
                },
            };
            sources.push(SourceConfig {
                name,
                uri,
                looped: s.looped,
                realtime: s.realtime,
                transport,
            });
        }

        let mut daemon = DaemonConfig::default();
        let duration = |key: &str, v: &toml::Spanned<String>| -> Result<Duration, ConfigError> {
            let d = humantime::parse_duration(v.get_ref().trim()).map_err(|e| {
                invalid(
                    key,
                    Some(v.span()),
                    format!("expected a duration like \"10s\" or \"500ms\": {e}"),
                )
            })?;
            if d.is_zero() {
                return Err(invalid(
                    key,
                    Some(v.span()),
                    "must be longer than zero".into(),
                ));
            }
            Ok(d)
        };
        if let Some(v) = &raw.daemon.shutdown_timeout {
            daemon.shutdown_timeout = duration("daemon.shutdown_timeout", v)?;
        }
        if let Some(v) = &raw.daemon.backoff_initial {
            daemon.backoff_initial = duration("daemon.backoff_initial", v)?;
        }
        if let Some(v) = &raw.daemon.backoff_max {
            daemon.backoff_max = duration("daemon.backoff_max", v)?;
            if daemon.backoff_max < daemon.backoff_initial {
                return Err(invalid(
                    "daemon.backoff_max",
                    Some(v.span()),
                    "must not be shorter than daemon.backoff_initial".into(),
                ));
            }
        }
        if let Some(v) = &raw.daemon.stall_timeout {
            daemon.stall_timeout = duration("daemon.stall_timeout", v)?;
        }
        if let Some(q) = &raw.daemon.queue {
            if !(1..=1024).contains(q.get_ref()) {
                return Err(invalid(
                    "daemon.queue",
                    Some(q.span()),
                    format!("expected 1 to 1024 windows, got {}", q.get_ref()),
                ));
            }
            daemon.queue = *q.get_ref();
        }

        let mut retention = RetentionConfig::default();
        if let Some(d) = &raw.retention.days {
            let v = *d.get_ref();
            if !(v.is_finite() && v > 0.0 && v < 100_000.0) {
                return Err(invalid(
                    "retention.days",
                    Some(d.span()),
                    format!("expected a positive number of days, got {v}"),
                ));
            }
            retention.max_age = Some(Duration::from_secs_f64(v * 86_400.0));
        }
        if let Some(m) = &raw.retention.max_db_mb {
            if *m.get_ref() == 0 {
                return Err(invalid(
                    "retention.max_db_mb",
                    Some(m.span()),
                    "expected a positive size in MB".into(),
                ));
            }
            retention.max_db_bytes = Some(m.get_ref() * 1024 * 1024);
        }

        let labels_path = base.join(raw.labels.get_ref());
        Ok(Config {
            path: path.to_path_buf(),
            model: ModelConfig {
                dir: base.join(&raw.model.dir),
                variant: raw.model.variant,
                layout: match raw.model.layout {
                    LayoutChoice::Auto => None,
                    LayoutChoice::Xenova => Some(Layout::Xenova),
                    LayoutChoice::Immich => Some(Layout::Immich),
                },
                threads: raw.model.threads,
                device: raw.model.device,
            },
            labels_path,
            database: base.join(&raw.database),
            sampling,
            window,
            keyframes,
            classify,
            sources,
            daemon,
            retention,
        })
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A value with a scheme stays as written; anything else is a file path relative to `base`.
pub fn resolve_uri(value: &str, base: &Path) -> String {
    let value = value.trim();
    if value.is_empty() || has_scheme(value) {
        value.to_string()
    } else {
        let p = base.join(value);
        std::path::absolute(&p)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }
}

pub fn has_scheme(value: &str) -> bool {
    match value.split_once("://") {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// The password (or token) in `scheme://user:password@host/...`, if any.
pub fn uri_password(uri: &str) -> Option<String> {
    let (_, rest) = uri.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(match userinfo.split_once(':') {
        Some((_, password)) => password.to_string(),
        None => userinfo.to_string(),
    })
    .filter(|p| !p.is_empty())
}

/// Replace the password of `scheme://user:password@host/...` by `***`, so credentials never
/// reach logs or the database.
pub fn mask_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return uri.to_string();
    };
    let userinfo = &authority[..at];
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{scheme}://{masked}{}", &rest[at..])
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
        assert_eq!(c.model.variant, ModelVariant::Auto);
        assert_eq!(c.model.device, DeviceChoice::Auto);
    }

    #[test]
    fn device_is_one_of_the_known_names() {
        let text = MINIMAL.replace("dir = \"m\"", "dir = \"m\"\ndevice = \"cuda\"");
        let c = Config::parse(&text, Path::new("c.toml")).unwrap();
        assert_eq!(c.model.device, DeviceChoice::Cuda);
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
        assert_eq!(c.sources[0].uri, "/x/clips/a.mp4");
        assert_eq!(c.sources[1].uri, "rtsp://u:p@cam/1");
        let dup = format!("{MINIMAL}[[source]]\nname = \"a\"\nuri = \"x\"\n[[source]]\nname = \"a\"\nuri = \"y\"\n");
        let e = Config::parse(&dup, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate") && e.contains("line 9"), "{e}");
    }

    #[test]
    fn daemon_retention_and_source_options_parse_and_validate() {
        let text = format!(
            "{MINIMAL}[daemon]\nshutdown_timeout = \"3s\"\nbackoff_initial = \"250ms\"\nbackoff_max = \"30s\"\nqueue = 2\n[retention]\ndays = 7\nmax_db_mb = 100\n[[source]]\nname = \"cam\"\nuri = \"rtsp://cam/1\"\ntransport = \"udp\"\n[[source]]\nname = \"demo\"\nuri = \"demo.mp4\"\nloop = true\nrealtime = true\n"
        );
        let c = Config::parse(&text, Path::new("/x/c.toml")).unwrap();
        assert_eq!(c.daemon.shutdown_timeout, Duration::from_secs(3));
        assert_eq!(c.daemon.backoff_initial, Duration::from_millis(250));
        assert_eq!(c.daemon.queue, 2);
        assert_eq!(c.daemon.stall_timeout, crate::ingest::DEFAULT_STALL_TIMEOUT);
        assert_eq!(c.retention.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(c.retention.max_db_bytes, Some(100 * 1024 * 1024));
        assert_eq!(c.sources[0].transport, RtspTransport::Udp);
        assert!(c.sources[0].is_live() && c.sources[0].paced());
        assert!(c.sources[1].looped && c.sources[1].realtime && !c.sources[1].is_live());
        assert!(c.sources[1].paced());
        let cam = format!("{MINIMAL}[[source]]\nname = \"desk\"\nuri = \"/dev/video2\"\n");
        let c = Config::parse(&cam, Path::new("c.toml")).unwrap();
        assert_eq!(c.sources[0].uri, "v4l2:///dev/video2");
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

    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_uri("rtsp://admin:hunter2@10.0.0.5:554/s"),
            "rtsp://admin:***@10.0.0.5:554/s"
        );
        assert_eq!(mask_uri("rtsp://token@cam/s"), "rtsp://***@cam/s");
        assert_eq!(mask_uri("rtsp://cam/s@x"), "rtsp://cam/s@x");
        assert_eq!(mask_uri("/path/with@sign.mp4"), "/path/with@sign.mp4");
        assert_eq!(
            uri_password("rtsp://admin:hunter2@10.0.0.5:554/s").as_deref(),
            Some("hunter2")
        );
        assert_eq!(uri_password("rtsp://cam/s@x"), None);
    }
}
