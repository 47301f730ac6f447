//! How a source's frames start flowing: the GStreamer pipeline for real, scripted sources in
//! tests.

use std::time::Duration;

use crate::ingest::{
    FrameSource, GstSource, IngestError, OpenOptions, RtspTransport, Sampling, SourceConfig,
};

/// Opens a source's pipeline; the real one is GStreamer, tests may script failures.
pub trait SourceOpener: Send + Sync {
    fn open(&self, source: &SourceConfig) -> Result<Box<dyn FrameSource>, IngestError>;
}

/// The GStreamer pipeline for a configured source.
pub struct GstOpener {
    pub sampling: Sampling,
    pub stall_timeout: Duration,
}

impl SourceOpener for GstOpener {
    fn open(&self, source: &SourceConfig) -> Result<Box<dyn FrameSource>, IngestError> {
        let options = OpenOptions {
            sampling: self.sampling,
            live: source.paced(source.is_live()),
            realtime: source.realtime,
            rtsp_tcp: source.transport == RtspTransport::Tcp,
            stall_timeout: self.stall_timeout,
            buffer_frames: 4,
        };
        Ok(Box::new(GstSource::open_with(
            &source.name,
            &source.location,
            options,
        )?))
    }
}
