//! Ingest: decode a stream with GStreamer and hand out sampled frames as packed RGB.
//!
//! Rules:
//! - Sampling is decided by timestamps (or frame count) *before* colour conversion, in a pad
//!   probe, so a 60 fps stream does not pay for converting frames nobody looks at.
//! - Frames are copied out of appsink honouring the row stride, with square pixels (the
//!   picture as a player displays it: anamorphic sources are rescaled, never cropped).
//! - Times are segment *stream time* in seconds (0 at the start of a file, even when the
//!   first buffer's PTS is not 0).
//! - GStreamer errors become [`IngestError`]s naming the source and GStreamer's message.
//! - Nothing heavy runs on a GStreamer streaming thread: appsink's callback only moves the
//!   sample into a bounded channel that our thread reads.
//! - Files wait for us (the channel blocks, which back-pressures the decoder); cameras never
//!   do: when the channel is full a live frame is dropped and counted, so the decoder and
//!   the network never stall behind a slow CLIP stage.
//!
//! Files: [`image`] (the picture type every later stage reads), [`sampling`] (which decoded
//! frames are kept), [`uri`] (where a source is, and the one masking rule for showing it),
//! [`source`] (a configured source and the [`FrameSource`] seam), [`pipeline`] (the
//! GStreamer pipeline itself).

pub mod image;
pub mod pipeline;
pub mod sampling;
pub mod source;
pub mod uri;

pub use image::{Frame, RgbImage};
pub use pipeline::{GstSource, OpenOptions, DEFAULT_STALL_TIMEOUT};
pub use sampling::{Sampler, Sampling, SamplingSection};
pub use source::{FrameSource, RtspTransport, SourceConfig, SourceSection};
pub use uri::Location;

use crate::Disposition;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("GStreamer could not be initialised: {0}")]
    Init(String),
    #[error("source {source_name:?}: cannot open {uri}: {reason}")]
    Open {
        source_name: String,
        uri: String,
        reason: String,
    },
    #[error("source {source_name:?} ({uri}): {message}{}", debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Stream {
        source_name: String,
        /// Credentials masked.
        uri: String,
        message: String,
        debug: Option<String>,
        live: bool,
    },
    #[error("source {source_name:?}: {uri} has no video stream (audio or other data only)")]
    NoVideo { source_name: String, uri: String },
    #[error("source {source_name:?}: cannot read frame: {reason}")]
    Frame { source_name: String, reason: String },
}

impl IngestError {
    pub fn disposition(&self) -> Disposition {
        match self {
            IngestError::Init(_) => Disposition::Stop,
            IngestError::Stream { live: true, .. } => Disposition::Retry,
            _ => Disposition::Skip,
        }
    }
}

pub fn init() -> Result<(), IngestError> {
    gstreamer::init().map_err(|e| IngestError::Init(e.to_string()))
}
