//! The picture type of the whole window path: packed RGB, square pixels, rows without
//! padding, as ingest copies it out of GStreamer.

/// A packed RGB8 picture: `data.len() == width * height * 3`, rows without padding.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

impl RgbImage {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Option<RgbImage> {
        (data.len() == width as usize * height as usize * 3).then_some(RgbImage {
            width,
            height,
            data,
        })
    }
}

/// One sampled frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Stream time in seconds.
    pub pts: f64,
    pub image: RgbImage,
}
