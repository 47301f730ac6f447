//! A configured source (`[[source]]`), and the seam every frame producer sits behind.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::Deserialize;

use super::error::IngestError;
use super::files;
use super::image::Frame;
use super::uri::{has_scheme, resolve_uri, Location};
use crate::settings::{Context, Invalid, Setting};
use crate::times::{parse_instant, Zone};

/// Anything that yields sampled frames: a camera, a file, or a test's synthetic frames.
pub trait FrameSource {
    fn name(&self) -> &str;
    /// `Ok(None)` at the end of the stream.
    fn next_frame(&mut self) -> Result<Option<Frame>, IngestError>;
    /// Duration of the media if the container says (files), in seconds.
    fn duration(&self) -> Option<f64> {
        None
    }
    /// When the recording started (unix seconds), if the container says; known once the
    /// first frame has come out.
    fn recorded_at(&self) -> Option<f64> {
        None
    }
    /// Things worth a warning that are not errors (a file that ends early).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether the stream says it is live, read once the first frame is out: GStreamer's
    /// latency query says live, or the stream has no known end (an MJPEG multipart stream,
    /// a live HLS playlist without `#EXT-X-ENDLIST`). `None` where the source cannot tell.
    fn stream_is_live(&self) -> Option<bool> {
        None
    }
    /// When the file was last modified as its server says (HTTP `Last-Modified`, unix
    /// seconds): a recording's end, as a local file's mtime is. Local files are asked
    /// directly.
    fn modified_at(&self) -> Option<f64> {
        None
    }
    /// Switch how frames not taken in time are treated: dropped and counted (live), or held
    /// until taken (finite).
    fn set_live(&mut self, _live: bool) {}
    /// Frames the source had to drop because they were not taken in time (live sources).
    fn dropped(&self) -> u64 {
        0
    }
    /// A [`crate::clock::monotonic_ms`] stamp the source refreshes while it waits for frames, for
    /// watchdogs that must tell a slow stream from a stuck thread.
    fn activity(&self) -> Option<Arc<AtomicU64>> {
        None
    }
}

/// What kind of source a location is: it decides which time a window is stamped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Has a start and an end; windows are positions in it, on its recording's clock.
    File,
    /// A camera or stream: windows are stamped with capture time.
    Live,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Live => "live",
        }
    }
}

/// How a file's recording start is known, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordedFrom {
    /// The source's `recorded_at` in the config.
    Config,
    /// The container's date tag (MP4 `creation_time`, Matroska `DateUTC`).
    Container,
    /// The file's modification time less its duration (a recorder closes the file when the
    /// recording stops).
    Mtime,
}

impl RecordedFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordedFrom::Config => "config",
            RecordedFrom::Container => "container",
            RecordedFrom::Mtime => "mtime",
        }
    }
}

/// What a file was when it was tagged, to tell a changed file from the same one again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FileIdentity {
    pub size: u64,
    /// Modification time, unix seconds.
    pub mtime: f64,
}

impl FileIdentity {
    pub fn of(path: &str) -> Option<FileIdentity> {
        let meta = std::fs::metadata(path).ok()?;
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        Some(FileIdentity {
            size: meta.len(),
            mtime,
        })
    }
}

/// How RTSP media travels. TCP (interleaved) is the default: it passes NAT and firewalls
/// and does not lose packets on busy Wi-Fi, which matters more here than latency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RtspTransport {
    #[default]
    Tcp,
    Udp,
}

/// A source as the daemon runs it.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    /// A `scheme://` URI, or an absolute file path resolved from what the user wrote; its
    /// shown form is masked once, here.
    pub location: Location,
    /// Start a file again at its end instead of finishing (test and demo sources).
    pub looped: bool,
    /// Deliver a file's frames at their playback rate, as a camera would.
    pub realtime: bool,
    pub transport: RtspTransport,
    /// When the recording started (unix seconds), overriding what the file says.
    pub recorded_at: Option<f64>,
    /// The config's word on live vs finite (`live = true|false`); without it the scheme
    /// decides, and for HTTP the stream itself (see [`SourceConfig::live_hint`]).
    pub live: Option<bool>,
}

impl SourceConfig {
    pub fn new(name: &str, uri: &str) -> SourceConfig {
        SourceConfig {
            name: name.to_string(),
            location: Location::new(uri),
            looped: false,
            realtime: false,
            transport: RtspTransport::default(),
            recorded_at: None,
            live: None,
        }
    }

    /// Live or finite as far as it is known before the stream is opened: the config's
    /// `live`, else the scheme (cameras and network streams are live, files finite), and
    /// `None` for HTTP, which serves recordings and cameras alike: the stream decides.
    pub fn live_hint(&self) -> Option<bool> {
        if self.live.is_some() {
            return self.live;
        }
        match self.location.scheme().as_str() {
            "rtsp" | "rtsps" | "rtspt" | "rtspu" | "v4l2" | "udp" | "srt" => Some(true),
            "http" | "https" => None,
            _ => Some(false),
        }
    }

    /// Known to be live before opening (see [`SourceConfig::live_hint`]).
    pub fn is_live(&self) -> bool {
        self.live_hint() == Some(true)
    }

    /// Frames arrive at playback rate and must be dropped, not queued, when we fall behind;
    /// `live` is what was decided for the stream.
    pub fn paced(&self, live: bool) -> bool {
        self.realtime || live
    }
}

impl SourceKind {
    pub fn of(live: bool) -> SourceKind {
        if live {
            SourceKind::Live
        } else {
            SourceKind::File
        }
    }
}

/// One `[[source]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    name: Setting<String>,
    uri: Setting<String>,
    #[serde(default, rename = "loop")]
    looped: bool,
    #[serde(default)]
    realtime: bool,
    transport: Option<Setting<String>>,
    live: Option<bool>,
    /// When a file's recording started, when the file does not say or says wrong.
    recorded_at: Option<Setting<String>>,
}

/// Every `[[source]]` of the config: names unique and non-empty, locations resolved against
/// the config file's directory (a bare `/dev/videoN` is a V4L2 camera). A directory or a
/// glob pattern is a pile of recordings: one source per video file, named
/// `NAME/PATH-WITHIN`.
pub fn validate_sources(
    sections: Vec<SourceSection>,
    context: &Context<'_>,
) -> Result<Vec<SourceConfig>, Invalid> {
    let mut sources: Vec<SourceConfig> = Vec::new();
    for s in sections {
        let name = s.name.get().trim().to_string();
        if name.is_empty() {
            return Err(Invalid::at("source.name", &s.name, "must not be empty"));
        }
        if sources.iter().any(|o| o.name == name) {
            return Err(Invalid::at(
                "source.name",
                &s.name,
                format!("duplicate source name {name:?}"),
            ));
        }
        let written = s.uri.get().trim();
        // A bare device path is what people copy from `v4l2-ctl --list-devices`.
        let uri = if written.starts_with("/dev/video") {
            format!("v4l2://{written}")
        } else {
            resolve_uri(written, context.base)
        };
        if uri.is_empty() {
            return Err(Invalid::at("source.uri", &s.uri, "must not be empty"));
        }
        let pile = !has_scheme(written)
            && (written.contains(['*', '?', '[']) || context.base.join(written).is_dir());
        let files: Vec<(String, String)> = if pile {
            let root = context.base.join(written);
            let root = if root.is_dir() {
                root
            } else {
                context.base.to_path_buf()
            };
            files::expand(written, context.base)
                .map_err(|e| Invalid::at("source.uri", &s.uri, e))?
                .into_iter()
                .map(|f| {
                    let within = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
                    (format!("{name}/{within}"), f.display().to_string())
                })
                .collect()
        } else {
            vec![(name.clone(), uri)]
        };
        let transport = match &s.transport {
            None => RtspTransport::Tcp,
            Some(t) => match t.get().to_ascii_lowercase().as_str() {
                "tcp" => RtspTransport::Tcp,
                "udp" => RtspTransport::Udp,
                other => {
                    return Err(Invalid::at(
                        "source.transport",
                        t,
                        format!("expected \"tcp\" or \"udp\", got {other:?}"),
                    ))
                }
            },
        };
        let recorded_at = match &s.recorded_at {
            None => None,
            Some(v) => Some(
                parse_instant(v.get(), &Zone::local())
                    .map_err(|e| Invalid::at("source.recorded_at", v, e))?,
            ),
        };
        for (name, uri) in files {
            if sources.iter().any(|o| o.name == name) {
                return Err(Invalid::at(
                    "source.name",
                    &s.name,
                    format!("duplicate source name {name:?}"),
                ));
            }
            sources.push(SourceConfig {
                name,
                location: Location::new(&uri),
                looped: s.looped,
                realtime: s.realtime,
                live: s.live,
                transport,
                recorded_at,
            });
        }
    }
    Ok(sources)
}
