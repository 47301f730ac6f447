//! Keyframes: group sampled frames into time windows and choose which of them CLIP sees.
//!
//! Rules:
//! - Windows are aligned to media time: window `i` covers `[i·len, (i+1)·len)` seconds, so
//!   re-running a file yields the same windows (and the store's upsert finds them again).
//! - A window is emitted as soon as a frame of a later window arrives, or at the end.
//! - Selection sits behind [`KeyframeSelector`]; [`AllFrames`] keeps every sampled frame
//!   (mean pooling over all of them, as in ViFi-CLIP / CLIP4Clip). Clustering selectors
//!   plug in here without touching the other stages.
//! - Selected frames stay in time order.

use std::time::Duration;

use crate::ingest::Frame;

/// The frames of one window that CLIP should see.
#[derive(Debug, Clone)]
pub struct Window {
    pub index: u64,
    /// Seconds of media time.
    pub start: f64,
    pub end: f64,
    /// How many sampled frames fell into the window.
    pub sampled: usize,
    /// The selected keyframes, in time order.
    pub keyframes: Vec<Frame>,
}

/// Chooses the keyframes of a window; returns indices into `frames`, in increasing order.
pub trait KeyframeSelector: Send {
    fn select(&mut self, frames: &[Frame]) -> Vec<usize>;
}

/// Every sampled frame is a keyframe.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllFrames;

impl KeyframeSelector for AllFrames {
    fn select(&mut self, frames: &[Frame]) -> Vec<usize> {
        (0..frames.len()).collect()
    }
}

/// Buckets frames into media-time windows and applies the selector.
pub struct Windower {
    length: f64,
    selector: Box<dyn KeyframeSelector>,
    current: Option<u64>,
    frames: Vec<Frame>,
}

impl Windower {
    pub fn new(length: Duration, selector: Box<dyn KeyframeSelector>) -> Windower {
        Windower {
            length: length.as_secs_f64(),
            selector,
            current: None,
            frames: Vec::new(),
        }
    }

    fn index_of(&self, pts: f64) -> u64 {
        (pts.max(0.0) / self.length).floor() as u64
    }

    /// Add a frame; returns the previous window when this frame starts a new one.
    pub fn push(&mut self, frame: Frame) -> Option<Window> {
        let index = self.index_of(frame.pts);
        let done = match self.current {
            Some(current) if index != current => self.close(None),
            _ => None,
        };
        self.current = Some(index);
        self.frames.push(frame);
        done
    }

    /// Close the last window. `media_end`: where the media ends, if known, so the last
    /// window does not claim time the file does not have.
    pub fn finish(&mut self, media_end: Option<f64>) -> Option<Window> {
        self.close(media_end)
    }

    fn close(&mut self, media_end: Option<f64>) -> Option<Window> {
        let index = self.current.take()?;
        let frames = std::mem::take(&mut self.frames);
        if frames.is_empty() {
            return None;
        }
        let start = index as f64 * self.length;
        let mut end = start + self.length;
        if let Some(media_end) = media_end {
            let last = frames.last().map(|f| f.pts).unwrap_or(start);
            if media_end > last && media_end < end {
                end = media_end;
            }
        }
        let sampled = frames.len();
        let mut chosen = self.selector.select(&frames);
        chosen.sort_unstable();
        chosen.dedup();
        let mut frames: Vec<Option<Frame>> = frames.into_iter().map(Some).collect();
        let keyframes = chosen
            .into_iter()
            .filter_map(|i| frames.get_mut(i).and_then(Option::take))
            .collect();
        Some(Window {
            index,
            start,
            end,
            sampled,
            keyframes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::RgbImage;

    fn frame(pts: f64) -> Frame {
        Frame {
            pts,
            image: RgbImage::new(1, 1, vec![0, 0, 0]).unwrap(),
        }
    }

    #[test]
    fn windows_follow_media_time() {
        let mut w = Windower::new(Duration::from_secs(10), Box::new(AllFrames));
        let mut out = Vec::new();
        for t in 0..25 {
            out.extend(w.push(frame(t as f64)));
        }
        out.extend(w.finish(Some(24.5)));
        assert_eq!(out.len(), 3);
        assert_eq!((out[0].start, out[0].end, out[0].sampled), (0.0, 10.0, 10));
        assert_eq!((out[1].start, out[1].end, out[1].sampled), (10.0, 20.0, 10));
        assert_eq!((out[2].start, out[2].end, out[2].sampled), (20.0, 24.5, 5));
        assert_eq!(
            out[2].keyframes.iter().map(|f| f.pts).collect::<Vec<_>>(),
            vec![20.0, 21.0, 22.0, 23.0, 24.0]
        );
    }

    #[test]
    fn selector_indices_come_back_in_time_order() {
        struct Reverse;
        impl KeyframeSelector for Reverse {
            fn select(&mut self, frames: &[Frame]) -> Vec<usize> {
                (0..frames.len()).rev().step_by(2).collect()
            }
        }
        let mut w = Windower::new(Duration::from_secs(10), Box::new(Reverse));
        for t in 0..5 {
            assert!(w.push(frame(t as f64)).is_none());
        }
        let win = w.finish(None).unwrap();
        assert_eq!(
            win.keyframes.iter().map(|f| f.pts).collect::<Vec<_>>(),
            vec![0.0, 2.0, 4.0]
        );
        assert!(w.finish(None).is_none());
    }
}
