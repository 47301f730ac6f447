//! `cliptag embed`: every sampled frame of a video or image through CLIP, with no windows,
//! keyframes or labels — the embeddings as the model sees them, for scripts and checks.

use crate::clip::{ClipError, ClipModel, MAX_BATCH};
use crate::ingest::{Frame, FrameSource, GstSource, IngestError, Sampling};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Clip(#[from] ClipError),
}

/// One sampled frame's embedding, for `cliptag embed`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrameEmbedding {
    pub source: String,
    pub pts: f64,
    pub embedding: Vec<f32>,
}

/// Embed every sampled frame of a video or image, calling `emit` in time order.
pub fn embed_media(
    model: &ClipModel,
    location: &str,
    sampling: Sampling,
    mut emit: impl FnMut(FrameEmbedding),
) -> Result<u64, EmbedError> {
    let mut source = GstSource::open(location, location, sampling)?;
    let mut batch: Vec<Frame> = Vec::new();
    let mut count = 0;
    let mut flush = |batch: &mut Vec<Frame>| -> Result<(), EmbedError> {
        if batch.is_empty() {
            return Ok(());
        }
        let images: Vec<_> = batch.iter().map(|f| &f.image).collect();
        let embeddings = model.embed_frames(&images)?;
        for (f, e) in batch.drain(..).zip(embeddings) {
            emit(FrameEmbedding {
                source: location.to_string(),
                pts: f.pts,
                embedding: e,
            });
        }
        Ok(())
    };
    while let Some(frame) = source.next_frame()? {
        count += 1;
        batch.push(frame);
        if batch.len() == MAX_BATCH {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    for w in source.warnings() {
        tracing::warn!(source = location, "{w}");
    }
    Ok(count)
}
