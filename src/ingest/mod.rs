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
//! GStreamer pipeline itself), [`reach`] (why a camera or server could not be reached).

pub mod error;
pub mod files;
pub mod image;
pub mod pipeline;
pub mod reach;
pub mod sampling;
pub mod source;
pub mod uri;

pub use error::IngestError;
pub use image::{Frame, RgbImage};
pub use pipeline::{init, GstSource, OpenOptions, DEFAULT_STALL_TIMEOUT};
pub use sampling::{Sampler, Sampling, SamplingSection};
pub use source::{
    FileIdentity, FrameSource, RecordedFrom, RtspTransport, SourceConfig, SourceKind, SourceSection,
};
pub use uri::Location;
