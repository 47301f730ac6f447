//! Keyframes: group sampled frames into time windows and choose which of them CLIP sees.
//!
//! Rules:
//! - Windows are aligned to media time: window `i` covers `[i·len, (i+1)·len)` seconds, so
//!   re-running a file yields the same windows (and the store's upsert finds them again).
//! - A window is emitted as soon as a frame of a later window arrives, or at the end.
//! - Selection sits behind [`KeyframeSelector`]; [`AllFrames`] keeps every sampled frame
//!   (mean pooling over all of them, as in ViFi-CLIP / CLIP4Clip); [`ClusterSelector`] does
//!   paper 000's cheap features → PCA → k-means and keeps the frame nearest each centroid.
//! - Selected frames stay in time order and keep their timestamps and features, so the
//!   next stage can tell an unchanged scene ([`scene_unchanged`]) without CLIP.
//! - Deterministic: the same frames give the same keyframes.
//!
//! Files: this one cuts windows; [`select`] chooses their keyframes; [`settings`] is the
//! `[window]` and `[keyframes]` tables and builds the one selector they ask for (the daemon
//! and the tuner both take it from there).

pub mod cluster;
pub mod features;
pub mod select;
pub mod settings;

use std::time::Duration;

pub use features::{feature_distance, thumbnail_lab};
pub use select::{
    scene_unchanged, AllFrames, ClusterSelector, KeyframeSelector, LastScene,
    DEFAULT_SCENE_THRESHOLD,
};
pub use settings::{Aggregation, KeyframeConfig, KeyframeSection, Selection, WindowSection};

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
    /// The cheap feature vector of each keyframe ([`thumbnail_lab`]).
    pub features: Vec<Vec<f32>>,
}

impl Window {
    /// The keyframes' pictures, in time order.
    pub fn keyframe_images(&self) -> Vec<&crate::ingest::RgbImage> {
        self.keyframes.iter().map(|f| &f.image).collect()
    }
}

/// Buckets frames into media-time windows and applies the selector.
pub struct Windower {
    length: f64,
    selector: Box<dyn KeyframeSelector>,
    current: Option<u64>,
    frames: Vec<Frame>,
    features: Vec<Vec<f32>>,
    /// The last frame's time, and the spacing of the last two frames: how long a frame
    /// lasts when the stream does not say where it ends.
    last_pts: Option<f64>,
    spacing: Option<f64>,
}

impl Windower {
    pub fn new(length: Duration, selector: Box<dyn KeyframeSelector>) -> Windower {
        Windower {
            length: length.as_secs_f64(),
            selector,
            current: None,
            frames: Vec::new(),
            features: Vec::new(),
            last_pts: None,
            spacing: None,
        }
    }

    fn index_of(&self, pts: f64) -> u64 {
        (pts.max(0.0) / self.length).floor() as u64
    }

    /// Add a frame; returns the previous window when this frame starts a new one.
    pub fn push(&mut self, frame: Frame) -> Option<Window> {
        if let Some(previous) = self.last_pts.replace(frame.pts) {
            if frame.pts > previous {
                self.spacing = Some(frame.pts - previous);
            }
        }
        let index = self.index_of(frame.pts);
        let done = match self.current {
            Some(current) if index != current => self.close(None),
            _ => None,
        };
        self.current = Some(index);
        self.features.push(thumbnail_lab(&frame.image));
        self.frames.push(frame);
        done
    }

    /// Close the last window. `media_end`: where the media ends, if known, so the last
    /// window does not claim time the file does not have (see [`Windower::stream_end`]);
    /// `None` keeps the window's whole length, so a live source's next connection starts
    /// in a later window.
    pub fn finish(&mut self, media_end: Option<f64>) -> Option<Window> {
        self.close(media_end)
    }

    /// Where a finite stream ends: `stated` (the container's duration) when it is past
    /// the last frame, else where the last frame ends (its time plus the spacing of the
    /// frames before it). A stated end before the last frame is wrong: the frames win.
    pub fn stream_end(&self, stated: Option<f64>) -> Option<f64> {
        let last = self.last_pts;
        stated
            .filter(|&e| last.is_none_or(|l| e > l))
            .or_else(|| Some(last? + self.spacing?))
    }

    fn close(&mut self, media_end: Option<f64>) -> Option<Window> {
        let index = self.current.take()?;
        let frames = std::mem::take(&mut self.frames);
        let features = std::mem::take(&mut self.features);
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
        let mut chosen = self.selector.select(&frames, &features);
        chosen.sort_unstable();
        chosen.dedup();
        chosen.retain(|&i| i < frames.len());
        let keyframe_features = chosen.iter().map(|&i| features[i].clone()).collect();
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
            features: keyframe_features,
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

    /// Issue 20: a 4 s clip was stored as 0–10 s, a 22 s one with a 20–30 s window.
    #[test]
    fn the_last_window_ends_where_the_stream_does() {
        for (seconds, media_end, expected) in [
            (4, None, (0.0, 4.0)),
            (22, None, (20.0, 22.0)),
            (22, Some(21.5), (20.0, 21.5)),
            // A stated end before the last frame is wrong: the frames win.
            (22, Some(3.0), (20.0, 22.0)),
        ] {
            let mut w = Windower::new(Duration::from_secs(10), Box::new(AllFrames));
            let mut out = Vec::new();
            for t in 0..seconds {
                out.extend(w.push(frame(t as f64)));
            }
            out.extend(w.finish(w.stream_end(media_end)));
            let last = out.last().unwrap();
            assert_eq!(
                (last.start, last.end),
                expected,
                "{seconds} s, {media_end:?}"
            );
        }
    }

    #[test]
    fn selector_indices_come_back_in_time_order() {
        struct Reverse;
        impl KeyframeSelector for Reverse {
            fn select(&mut self, frames: &[Frame], _: &[Vec<f32>]) -> Vec<usize> {
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
