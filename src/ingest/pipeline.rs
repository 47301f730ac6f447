//! The GStreamer pipeline of one source: uridecodebin → (identity) → videoconvert →
//! videoscale → appsink(RGB, square pixels), read by our own thread.
//!
//! Rules: see the stage's rules in `ingest/mod.rs`; this file is where they are kept.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::error::IngestError;
use super::image::{Frame, RgbImage};
use super::sampling::{Sampler, Sampling};
use super::source::FrameSource;
use super::uri::{to_uri, Location};
use crate::clock::monotonic_ms;

/// GStreamer, and what must not be first done by several source threads at once.
///
/// GLib 2.74 (Debian 12) can deadlock when two threads register GIO's socket types at the
/// same time: one inside `g_type_class_ref` (rtspsrc making a connection) waits on the
/// once-guard of `g_socket_address_get_type`, whose holder (souphttpsrc's plugin loading)
/// waits on the type lock the first one holds. Seen as a daemon whose every source sat in
/// "connecting" forever (gdb: tests/faults.rs, about one start in ten under load). So the
/// types are registered here, on one thread, and the source plugins loaded, before any
/// source starts.
///
/// Once per process: every later call (each pipeline's) waits for the first and is then
/// free, so even threads that open pipelines without calling this first are serialised
/// through it.
pub fn init() -> Result<(), IngestError> {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            gstreamer::init().map_err(|e| e.to_string())?;
            register_shared_types();
            Ok(())
        })
        .clone()
        .map_err(IngestError::Init)
}

/// See [`init`].
fn register_shared_types() {
    use gio::prelude::StaticType;
    for ty in [
        gio::SocketAddress::static_type(),
        gio::InetSocketAddress::static_type(),
        gio::InetAddress::static_type(),
        gio::NetworkAddress::static_type(),
        gio::Socket::static_type(),
        gio::SocketClient::static_type(),
        gio::SocketConnection::static_type(),
        gio::TcpConnection::static_type(),
        gio::Cancellable::static_type(),
    ] {
        // Registering is the point; a class reference also runs the class initialisers.
        drop(gst::glib::Class::<gst::glib::Object>::from_type(ty));
    }
    for element in [
        "uridecodebin",
        "rtspsrc",
        "souphttpsrc",
        "filesrc",
        "decodebin",
    ] {
        if let Some(factory) = gst::ElementFactory::find(element) {
            // A missing plugin is reported where a source needs it, with its name.
            let _ = factory.load();
        }
    }
}

/// How a pipeline should treat its stream.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub sampling: Sampling,
    /// Cameras and network streams: frames we cannot take in time are dropped and counted,
    /// and errors are worth a retry.
    pub live: bool,
    /// Play a file at its own rate (appsink syncs on the clock) instead of as fast as we
    /// can decode it; with `live`, makes a file behave like a camera.
    pub realtime: bool,
    /// RTSP over TCP (interleaved) rather than UDP.
    pub rtsp_tcp: bool,
    pub stall_timeout: Duration,
    /// Frames decoded but not yet taken by our thread.
    pub buffer_frames: usize,
}

impl OpenOptions {
    pub fn file(sampling: Sampling) -> OpenOptions {
        OpenOptions {
            sampling,
            live: false,
            realtime: false,
            rtsp_tcp: true,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            buffer_frames: 4,
        }
    }
}

/// Links decodebin's first video pad to our part of the pipeline.
///
/// decodebin prefers hardware decoders where they are installed. NVIDIA's Jetson decoders
/// (nvv4l2decoder) hand out frames in device memory (`memory:NVMM`), which videoconvert
/// cannot read; NVIDIA's own nvvidconv copies them to system memory, so it goes in between
/// when present. Anything else that cannot link is an error naming the caps and the way to
/// force software decoding.
fn link_decoded_video(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    entry: &gst::Element,
) -> Result<(), String> {
    let sink = entry
        .static_pad("sink")
        .ok_or_else(|| format!("{} has no sink pad", entry.name()))?;
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let in_device_memory = caps
        .features(0)
        .is_some_and(|features| features.contains("memory:NVMM"));
    let copy_out = if in_device_memory {
        gst::ElementFactory::make("nvvidconv").build().ok()
    } else {
        None
    };
    let linked = match &copy_out {
        Some(copy) => pipeline
            .add(copy)
            .map_err(|e| e.to_string())
            .and_then(|()| copy.link(entry).map_err(|e| e.to_string()))
            .and_then(|()| {
                copy.sync_state_with_parent()
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .and_then(|()| {
                let copy_sink = copy.static_pad("sink").ok_or("nvvidconv has no sink pad")?;
                pad.link(&copy_sink)
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}"))
            }),
        None => pad.link(&sink).map(|_| ()).map_err(|e| format!("{e:?}")),
    };
    linked.map_err(|why| {
        format!(
            "the decoder's output ({caps}) cannot be converted to RGB ({why}); if a hardware \
             decoder produced it, force software decoding with \
             GST_PLUGIN_FEATURE_RANK=nvv4l2decoder:NONE in the service's environment"
        )
    })
}

/// A uridecodebin → videoconvert → videoscale → appsink(RGB, square pixels) pipeline.
pub struct GstSource {
    name: String,
    uri: String,
    /// Live (drop frames not taken in time) or finite (hold them): the appsink's drop
    /// policy, shared with its callback, switchable once the stream says which it is.
    live_flag: Arc<AtomicBool>,
    pipeline: gst::Pipeline,
    appsink: gst_app::AppSink,
    /// `None` once shut down: dropping the receiver releases a streaming thread blocked on
    /// a full channel, so the pipeline can go to NULL.
    samples: Option<crossbeam_channel::Receiver<gst::Sample>>,
    dropped: Arc<AtomicU64>,
    /// The location as written and the secrets in it, to scrub from messages.
    secret: (String, Vec<String>),
    bus: gst::Bus,
    no_video: Arc<AtomicBool>,
    video_pads: Arc<AtomicU32>,
    last_pts: Option<f64>,
    /// When the recording started, from the container's date tag (MP4 `creation_time`,
    /// Matroska `DateUTC`), as unix seconds.
    recorded_at: Option<f64>,
    frames_out: u64,
    finished: bool,
    /// A camera or a server, not a local file: who to blame for a stall.
    camera_or_server: bool,
    /// The HTTP server's `Last-Modified` for what it serves, once its headers are in.
    last_modified: Arc<Mutex<Option<f64>>>,
    /// Where it is on the network, to find out why it could not be reached.
    host_port: Option<(String, u16)>,
    /// The duration as the pipeline said it when the stream finished.
    known_duration: Option<f64>,
    warnings: Vec<String>,
    /// Last decoded buffer, sampled or not, or last bytes out of a byte source
    /// ([`monotonic_ms`]), written by pad probes: a stream sampled once a minute is not
    /// stalled between samples, nor a download still reaching a file's index.
    decoded_at: Arc<AtomicU64>,
    /// Refreshed by our reader loop; see [`FrameSource::activity`].
    alive_at: Arc<AtomicU64>,
    stall_timeout: std::time::Duration,
}

/// How long a pipeline may go without a frame, an error or the end of the stream before
/// it counts as stalled. decodebin2 can swallow a demuxer's error (it filters errors of an
/// element while changing its state, and a pull-mode demuxer may fail inside that window),
/// which otherwise leaves the pipeline waiting forever.
pub const DEFAULT_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl GstSource {
    /// `location`: a file path or a URI.
    pub fn open(name: &str, location: &str, sampling: Sampling) -> Result<GstSource, IngestError> {
        GstSource::open_with(name, &Location::new(location), OpenOptions::file(sampling))
    }

    pub fn open_with(
        name: &str,
        location: &Location,
        options: OpenOptions,
    ) -> Result<GstSource, IngestError> {
        init()?;
        let sampling = options.sampling;
        let open_err = |reason: String| IngestError::Open {
            source_name: name.to_string(),
            uri: location.shown().to_string(),
            reason,
        };
        if location.is_file_path() {
            let meta = std::fs::metadata(location.secret())
                .map_err(|e| open_err(format!("file not readable: {e}")))?;
            if !meta.is_file() {
                return Err(open_err("not a regular file".into()));
            }
        }
        let uri = to_uri(location.secret()).map_err(open_err)?;

        let pipeline = gst::Pipeline::with_name(&format!("cliptag-{name}"));
        let make = |factory: &str| {
            gst::ElementFactory::make(factory)
                .build()
                .map_err(|_| open_err(format!("GStreamer element {factory:?} is missing; install the GStreamer plugin packages")))
        };
        let decode = gst::ElementFactory::make("uridecodebin")
            .property("uri", &uri)
            .build()
            .map_err(|_| open_err("GStreamer element \"uridecodebin\" is missing".into()))?;
        let convert = make("videoconvert")?;
        let scale = make("videoscale")?;
        let caps = gst_video::VideoCapsBuilder::new()
            .format(gst_video::VideoFormat::Rgb)
            .pixel_aspect_ratio(gst::Fraction::new(1, 1))
            .build();
        let appsink = gst_app::AppSink::builder()
            .caps(&caps)
            .sync(false)
            .max_buffers(1)
            .drop(false)
            .build();
        let (sample_tx, samples) = crossbeam_channel::bounded(options.buffer_frames.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        // Switchable: an HTTP stream says whether it is live only once it plays.
        let live_flag = Arc::new(AtomicBool::new(options.live));
        {
            let dropped = dropped.clone();
            let live = live_flag.clone();
            appsink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if live.load(Ordering::Relaxed) {
                            match sample_tx.try_send(sample) {
                                Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                                    Err(gst::FlowError::Flushing)
                                }
                                Err(crossbeam_channel::TrySendError::Full(_)) => {
                                    dropped.fetch_add(1, Ordering::Relaxed);
                                    Ok(gst::FlowSuccess::Ok)
                                }
                                Ok(()) => Ok(gst::FlowSuccess::Ok),
                            }
                        } else {
                            sample_tx
                                .send(sample)
                                .map(|_| gst::FlowSuccess::Ok)
                                .map_err(|_| gst::FlowError::Flushing)
                        }
                    })
                    .build(),
            );
        }
        // A camera's MJPEG-over-HTTP stream (multipart/x-mixed-replace) carries one stream,
        // but multipartdemux waits for more parts' types before it says it has all its
        // pads, and decodebin exposes none until it does: the stream would stall unseen.
        decode.connect("deep-element-added", false, |values| {
            if let Some(element) = values.get(2).and_then(|v| v.get::<gst::Element>().ok()) {
                let is_multipart = element
                    .factory()
                    .is_some_and(|f| f.name() == "multipartdemux");
                if is_multipart && element.find_property("single-stream").is_some() {
                    element.set_property("single-stream", true);
                }
            }
            None
        });
        // Progress is a decoded frame, or bytes still arriving: a recording on a slow web
        // server whose index sits at its end decodes nothing until it is all downloaded.
        let decoded_at = Arc::new(AtomicU64::new(monotonic_ms()));
        let last_modified: Arc<Mutex<Option<f64>>> = Arc::default();
        {
            let rtsp_tcp = options.rtsp_tcp;
            let progress = decoded_at.clone();
            let last_modified = last_modified.clone();
            decode.connect("source-setup", false, move |values| {
                let source = values.get(1).and_then(|v| v.get::<gst::Element>().ok())?;
                // rtspsrc tries UDP first and falls back to TCP only after a timeout;
                // cameras behind NAT or on lossy Wi-Fi do better on TCP from the start.
                if rtsp_tcp && source.find_property("protocols").is_some() {
                    source.set_property_from_str("protocols", "tcp");
                }
                // Byte sources (files, HTTP) have one static src pad; rtspsrc's come later,
                // with decoded frames close behind.
                if let Some(pad) = source.static_pad("src") {
                    let progress = progress.clone();
                    pad.add_probe(
                        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                        move |_, _| {
                            progress.fetch_max(monotonic_ms(), Ordering::Relaxed);
                            gst::PadProbeReturn::Ok
                        },
                    );
                    // souphttpsrc hands the response's headers downstream in an event:
                    // Last-Modified is an HTTP recording's mtime.
                    let last_modified = last_modified.clone();
                    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                        if let Some(t) = info.event().and_then(http_last_modified) {
                            if let Ok(mut slot) = last_modified.lock() {
                                *slot = Some(t);
                            }
                        }
                        gst::PadProbeReturn::Ok
                    });
                }
                None
            });
        }
        pipeline
            .add_many([&decode, &convert, &scale, appsink.upcast_ref()])
            .map_err(|e| open_err(e.to_string()))?;
        gst::Element::link_many([&convert, &scale, appsink.upcast_ref()])
            .map_err(|e| open_err(e.to_string()))?;
        // Where decoded video enters our part of the pipeline. A realtime file is paced by
        // an identity that syncs on the clock *before* sampling, so every decoded frame
        // flows at playback rate as from a camera; pacing at appsink instead would hold the
        // decoder still until each sampled frame's time came.
        let entry = if options.realtime {
            let pace = gst::ElementFactory::make("identity")
                .property("sync", true)
                .build()
                .map_err(|_| open_err("GStreamer element \"identity\" is missing".into()))?;
            pipeline.add(&pace).map_err(|e| open_err(e.to_string()))?;
            pace.link(&convert).map_err(|e| open_err(e.to_string()))?;
            pace
        } else {
            convert.clone()
        };

        let sampler = Mutex::new(Sampler::new(sampling));
        let decoded_stamp = decoded_at.clone();
        let convert_sink = convert
            .static_pad("sink")
            .ok_or_else(|| open_err("videoconvert has no sink pad".into()))?;
        convert_sink.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(mut pts) = info.buffer().map(|b| b.pts()) else {
                return gst::PadProbeReturn::Ok;
            };
            decoded_stamp.store(monotonic_ms(), Ordering::Relaxed);
            if pts.is_none() {
                // A stream without timestamps (MJPEG multipart over HTTP says none): each
                // frame is stamped with when it arrived, as a camera's would be.
                pts = pad.parent_element().and_then(|e| e.current_running_time());
                if let (Some(t), Some(buffer)) = (pts, info.buffer_mut()) {
                    buffer.make_mut().set_pts(t);
                }
            }
            let pts = stream_time_of(pad, pts);
            let take = sampler.lock().map(|mut s| s.take(pts)).unwrap_or(true);
            if take {
                gst::PadProbeReturn::Ok
            } else {
                // Taking the buffer and answering Handled releases it here; answering Drop
                // makes gstreamer-rs 0.25 unref a null pointer on GStreamer 1.22.
                drop(info.take_buffer());
                gst::PadProbeReturn::Handled
            }
        });

        let no_video = Arc::new(AtomicBool::new(false));
        let video_pads = Arc::new(AtomicU32::new(0));
        {
            let convert = entry.downgrade();
            let pipeline_weak = pipeline.downgrade();
            let video_pads = video_pads.clone();
            decode.connect_pad_added(move |decode, pad| {
                let is_video = pad
                    .current_caps()
                    .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
                    .unwrap_or(false);
                let Some(pipeline) = pipeline_weak.upgrade() else {
                    return;
                };
                if is_video && video_pads.fetch_add(1, Ordering::SeqCst) == 0 {
                    if let Some(convert) = convert.upgrade() {
                        if let Err(reason) = link_decoded_video(&pipeline, pad, &convert) {
                            // On the bus, so the source fails with the reason instead of
                            // stalling on a pad nothing reads.
                            gst::element_error!(decode, gst::StreamError::Format, ("{}", reason));
                        }
                    }
                    return;
                }
                // Audio and extra video streams go to a fakesink: left unlinked they would
                // stop the whole pipeline with "not-linked".
                if let Ok(sink) = gst::ElementFactory::make("fakesink")
                    .property("sync", false)
                    .property("async", false)
                    .build()
                {
                    if pipeline.add(&sink).is_ok() {
                        let _ = sink.sync_state_with_parent();
                        if let Some(sinkpad) = sink.static_pad("sink") {
                            let _ = pad.link(&sinkpad);
                        }
                    }
                }
            });
        }
        {
            let no_video = no_video.clone();
            let video_pads = video_pads.clone();
            decode.connect_no_more_pads(move |_| {
                if video_pads.load(Ordering::SeqCst) == 0 {
                    no_video.store(true, Ordering::SeqCst);
                }
            });
        }

        let bus = pipeline
            .bus()
            .ok_or_else(|| open_err("pipeline has no bus".into()))?;
        let mut source = GstSource {
            name: name.to_string(),
            uri: location.shown().to_string(),
            live_flag,
            pipeline,
            appsink,
            samples: Some(samples),
            dropped,
            secret: (location.secret().to_string(), location.secrets()),
            bus,
            no_video,
            video_pads,
            last_pts: None,
            recorded_at: None,
            frames_out: 0,
            finished: false,
            camera_or_server: !location.is_file_path() && location.scheme() != "file",
            last_modified,
            host_port: location.host_port(),
            known_duration: None,
            decoded_at,
            alive_at: Arc::new(AtomicU64::new(monotonic_ms())),
            stall_timeout: options.stall_timeout,
            warnings: Vec::new(),
        };
        if source.pipeline.set_state(gst::State::Playing).is_err() {
            // The reason is on the bus; fall back to a generic one if it is not.
            let err = source
                .pop_bus_error()
                .unwrap_or_else(|| open_err("pipeline refused to start".into()));
            source.shutdown();
            return Err(match err {
                IngestError::Stream { message, debug, .. } => open_err(match debug {
                    Some(d) => format!("{message} ({d})"),
                    None => message,
                }),
                other => other,
            });
        }
        Ok(source)
    }

    fn stream_error(&self, message: String, debug: Option<String>) -> IngestError {
        IngestError::Stream {
            source_name: self.name.clone(),
            uri: self.uri.clone(),
            message,
            debug,
            live: self.live_flag.load(Ordering::Relaxed),
        }
    }

    /// What a camera's or server's failure means, where GStreamer's words do not say:
    /// refused credentials, a missing path, or why the host could not be reached.
    fn named_cause(&self, error: &gst::glib::Error) -> Option<String> {
        if !self.camera_or_server {
            return None;
        }
        if error.matches(gst::ResourceError::NotAuthorized) {
            return Some(
                "authentication failed: the camera or server refused the user name and password"
                    .to_string(),
            );
        }
        if error.matches(gst::ResourceError::NotFound) {
            return Some("the camera or server has no such path".to_string());
        }
        let opening = [
            gst::ResourceError::OpenRead,
            gst::ResourceError::OpenReadWrite,
            gst::ResourceError::Read,
            gst::ResourceError::Failed,
        ];
        if self.frames_out == 0 && opening.iter().any(|&kind| error.matches(kind)) {
            let (host, port) = self.host_port.as_ref()?;
            return crate::ingest::reach::why_unreachable(host, *port);
        }
        None
    }

    /// GStreamer's messages may quote the location, credentials included.
    fn scrub(&self, text: &str) -> String {
        let (raw, secrets) = &self.secret;
        let mut text = text.replace(raw.as_str(), &self.uri);
        // A secret of one or two characters would mask half the message; it is in the
        // location, which was replaced above.
        for secret in secrets.iter().filter(|s| s.len() >= 3) {
            text = text.replace(secret.as_str(), "***");
        }
        text
    }

    pub fn set_stall_timeout(&mut self, timeout: Duration) {
        self.stall_timeout = timeout;
    }

    /// The first error waiting on the bus, if any; warnings are kept for [`warnings`].
    fn pop_bus_error(&mut self) -> Option<IngestError> {
        while let Some(msg) = self.bus.pop_filtered(&[
            gst::MessageType::Error,
            gst::MessageType::Warning,
            gst::MessageType::Tag,
        ]) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    let element = msg.src().map(|s| s.name().to_string());
                    let debug = e.debug().map(|d| d.to_string());
                    // Some elements quote another's debug string in their message
                    // (hlsdemux: "Internal data stream error.: ../libs/gst/…"): the
                    // source paths after it mean nothing to a user.
                    let error = e.error().to_string();
                    let error = error.split(": ../").next().unwrap_or(&error).trim();
                    let message = match element {
                        Some(el) => format!("{error} (from element {el})"),
                        None => error.to_string(),
                    };
                    let message = match self.named_cause(&e.error()) {
                        Some(cause) => format!("{cause}: {message}"),
                        None => message,
                    };
                    // GStreamer's debug strings end with a human reason after a
                    // file:line and an element path; keep only such a reason.
                    let debug = debug
                        .and_then(|d| d.lines().last().map(str::trim).map(str::to_string))
                        .filter(|d| !d.is_empty() && !d.contains("/Gst") && !d.starts_with("../"));
                    return Some(
                        self.stream_error(self.scrub(&message), debug.map(|d| self.scrub(&d))),
                    );
                }
                gst::MessageView::Warning(w) => {
                    self.warnings
                        .push(self.scrub(&format!("GStreamer warning: {}", w.error())));
                }
                gst::MessageView::Tag(t) if self.recorded_at.is_none() => {
                    self.recorded_at = t
                        .tags()
                        .get::<gst::tags::DateTime>()
                        .and_then(|d| unix_of(&d.get()));
                }
                _ => {}
            }
        }
        None
    }

    fn shutdown(&mut self) {
        self.samples = None;
        let _ = self.pipeline.set_state(gst::State::Null);
    }

    fn frame_from_sample(&self, sample: &gst::Sample) -> Result<Frame, IngestError> {
        let err = |reason: &str| IngestError::Frame {
            source_name: self.name.clone(),
            reason: reason.to_string(),
        };
        let buffer = sample
            .buffer()
            .ok_or_else(|| err("sample without buffer"))?;
        let caps = sample.caps().ok_or_else(|| err("sample without caps"))?;
        let info =
            gst_video::VideoInfo::from_caps(caps).map_err(|_| err("caps are not raw video"))?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|_| err("buffer cannot be mapped"))?;
        let (width, height) = (info.width(), info.height());
        let stride = frame.plane_stride()[0] as usize;
        let plane = frame.plane_data(0).map_err(|_| err("plane 0 missing"))?;
        let row_bytes = width as usize * 3;
        if stride < row_bytes || plane.len() < stride * (height as usize - 1) + row_bytes {
            return Err(err("plane smaller than its caps say"));
        }
        let mut data = Vec::with_capacity(row_bytes * height as usize);
        for row in plane.chunks(stride).take(height as usize) {
            data.extend_from_slice(&row[..row_bytes]);
        }
        let pts = sample
            .segment()
            .and_then(|s| {
                s.downcast_ref::<gst::ClockTime>()
                    .and_then(|seg| seg.to_stream_time(buffer.pts()))
            })
            .or(buffer.pts())
            .map(|t| t.nseconds() as f64 / 1e9)
            .unwrap_or(self.last_pts.unwrap_or(0.0));
        Ok(Frame {
            pts,
            image: RgbImage {
                width,
                height,
                data,
            },
        })
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        // Asked once more while the pipeline can answer: after shutdown it cannot, and the
        // last window's end is cut to it.
        self.known_duration = self.duration();
        self.finished = true;
        if let (Some(duration), Some(last)) = (self.duration(), self.last_pts) {
            // A damaged file usually ends with a normal EOS, fewer frames and no error.
            if duration - last > 2.0 {
                self.warnings.push(format!(
                    "stream ended at {last:.1} s but the container says {duration:.1} s: the file may be truncated or damaged"
                ));
            }
        }
        self.shutdown();
    }
}

/// `Last-Modified` (unix seconds) from souphttpsrc's `http-headers` event, if this is it.
fn http_last_modified(event: &gst::Event) -> Option<f64> {
    let s = event.structure().filter(|s| s.name() == "http-headers")?;
    let headers = s.get::<gst::Structure>("response-headers").ok()?;
    let value = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("last-modified"))
        .and_then(|(_, v)| v.get::<String>().ok())?;
    let when = jiff::fmt::rfc2822::parse(&value).ok()?;
    Some(when.timestamp().as_second() as f64)
}

/// A container's date as unix seconds; `None` for a date without a time of day, or a
/// zero date (an MP4 whose `creation_time` was never set reads as 1904-01-01).
fn unix_of(date: &gst::DateTime) -> Option<f64> {
    if !date.has_time() || date.year() < 1971 {
        return None;
    }
    let g = date.to_g_date_time().ok()?;
    Some(g.to_unix() as f64 + g.microsecond() as f64 / 1e6)
}

fn stream_time_of(pad: &gst::Pad, pts: Option<gst::ClockTime>) -> Option<f64> {
    let pts = pts?;
    let stream_time = pad
        .sticky_event::<gst::event::Segment>(0)
        .and_then(|ev| {
            ev.segment()
                .downcast_ref::<gst::ClockTime>()
                .and_then(|s| s.to_stream_time(pts))
        })
        .unwrap_or(pts);
    Some(stream_time.nseconds() as f64 / 1e9)
}

impl FrameSource for GstSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, IngestError> {
        // A stall is time spent waiting here with nothing decoded. A caller that was busy
        // between frames (a batch of slow inference) held the pipeline back through the
        // appsink's queue, which is not the stream's fault.
        let waiting_since = monotonic_ms();
        loop {
            if self.finished {
                return Ok(None);
            }
            if let Some(err) = self.pop_bus_error() {
                self.finish();
                return Err(err);
            }
            if self.no_video.load(Ordering::SeqCst) && self.video_pads.load(Ordering::SeqCst) == 0 {
                self.finish();
                return Err(IngestError::NoVideo {
                    source_name: self.name.clone(),
                    uri: self.uri.clone(),
                });
            }
            let now = monotonic_ms();
            self.alive_at.store(now, Ordering::Relaxed);
            let last_progress = self.decoded_at.load(Ordering::Relaxed).max(waiting_since);
            if now.saturating_sub(last_progress) > self.stall_timeout.as_millis() as u64 {
                let seconds = self.stall_timeout.as_secs_f64();
                let silent_s = now.saturating_sub(last_progress) as f64 / 1000.0;
                let started = self.video_pads.load(Ordering::SeqCst) > 0;
                // Who is silent decides what to say: a file is damaged, a camera or server
                // stopped answering.
                let message = match (self.camera_or_server, started) {
                    (false, false) => format!("no playable video stream found: decoding stalled for {seconds:.0} s without an error from GStreamer (the file is probably damaged)"),
                    (false, true) => format!("decoding stalled: no frame, error or end of stream for {seconds:.0} s"),
                    (true, false) => format!("no answer: the camera or server was reached but sent no video for {silent_s:.0} s"),
                    (true, true) => format!("the camera or server stopped answering: nothing received for {silent_s:.0} s since the last frame"),
                };
                self.finish();
                return Err(self.stream_error(message, None));
            }
            let Some(samples) = &self.samples else {
                return Ok(None);
            };
            let sample = match samples.recv_timeout(Duration::from_millis(100)) {
                Ok(sample) => Some(sample),
                // EOS reaches appsink only after every sample before it went through the
                // callback, so once it is seen the channel holds all that is left.
                Err(_) if self.appsink.is_eos() => samples.try_recv().ok(),
                Err(_) => None,
            };
            if let Some(sample) = sample {
                if self.frames_out == 0 {
                    // The appsink posted the stream's tags (the container's date among
                    // them) before this first buffer reached it: read them now, so a
                    // caller asking for the recording's start at the first frame gets it.
                    if let Some(err) = self.pop_bus_error() {
                        self.finish();
                        return Err(err);
                    }
                }
                self.decoded_at.fetch_max(monotonic_ms(), Ordering::Relaxed);
                let frame = self.frame_from_sample(&sample)?;
                self.last_pts = Some(frame.pts);
                self.frames_out += 1;
                return Ok(Some(frame));
            }
            if self.appsink.is_eos() {
                // An error may have been posted just before EOS reached us.
                if let Some(err) = self.pop_bus_error() {
                    self.finish();
                    return Err(err);
                }
                self.finish();
                return Ok(None);
            }
        }
    }

    fn duration(&self) -> Option<f64> {
        if self.finished {
            return self.known_duration;
        }
        self.pipeline
            .query_duration::<gst::ClockTime>()
            .map(|d| d.nseconds() as f64 / 1e9)
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn recorded_at(&self) -> Option<f64> {
        self.recorded_at
    }

    fn modified_at(&self) -> Option<f64> {
        self.last_modified.lock().ok().and_then(|t| *t)
    }

    fn stream_is_live(&self) -> Option<bool> {
        let mut latency = gst::query::Latency::new();
        if self.pipeline.query(&mut latency) && latency.result().0 {
            return Some(true);
        }
        // A stream with a known end is a recording; one without (MJPEG multipart, a live
        // HLS playlist) goes on until it fails.
        Some(self.duration().is_none())
    }

    fn set_live(&mut self, live: bool) {
        self.live_flag.store(live, Ordering::Relaxed);
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn activity(&self) -> Option<Arc<AtomicU64>> {
        Some(self.alive_at.clone())
    }
}

impl Drop for GstSource {
    fn drop(&mut self) {
        self.shutdown();
    }
}
