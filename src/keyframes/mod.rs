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

pub mod cluster;
pub mod features;

use std::time::Duration;

pub use features::{feature_distance, thumbnail_lab};

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

/// Chooses the keyframes of a window from the frames and their cheap features; returns
/// indices into `frames`.
pub trait KeyframeSelector: Send {
    fn select(&mut self, frames: &[Frame], features: &[Vec<f32>]) -> Vec<usize>;
}

/// Every sampled frame is a keyframe.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllFrames;

impl KeyframeSelector for AllFrames {
    fn select(&mut self, frames: &[Frame], _features: &[Vec<f32>]) -> Vec<usize> {
        (0..frames.len()).collect()
    }
}

/// Paper 000's selection: PCA of the cheap features, k-means++ (fixed seed, restarts), the
/// frame nearest each centroid. Frames closer than `duplicate_distance` count as one, so
/// k shrinks on static scenes (a still camera yields one keyframe).
#[derive(Debug, Clone)]
pub struct ClusterSelector {
    pub k: usize,
    pub pca_dims: usize,
    pub restarts: usize,
    pub seed: u64,
    pub duplicate_distance: f32,
}

impl ClusterSelector {
    pub fn new(k: usize) -> ClusterSelector {
        ClusterSelector {
            k,
            pca_dims: 8,
            restarts: 4,
            seed: 0x5EED,
            duplicate_distance: DEFAULT_SCENE_THRESHOLD,
        }
    }

    /// How many visually distinct frames there are (greedy grouping, in time order).
    fn distinct(&self, features: &[Vec<f32>]) -> usize {
        let mut representatives: Vec<&Vec<f32>> = Vec::new();
        for f in features {
            if !representatives
                .iter()
                .any(|r| feature_distance(r, f) <= self.duplicate_distance)
            {
                representatives.push(f);
            }
        }
        representatives.len()
    }
}

impl KeyframeSelector for ClusterSelector {
    fn select(&mut self, frames: &[Frame], features: &[Vec<f32>]) -> Vec<usize> {
        if frames.is_empty() {
            return Vec::new();
        }
        let k = self.k.min(self.distinct(features)).max(1);
        let scores = cluster::pca(features, self.pca_dims);
        let clustering = cluster::kmeans(&scores, k, self.restarts, self.seed);
        cluster::medoids(&scores, &clustering)
    }
}

/// Feature distance under which two frames show the same scene: about four just-noticeable
/// colour differences per thumbnail cell, above sensor noise and compression flicker.
pub const DEFAULT_SCENE_THRESHOLD: f32 = 4.0;

/// True when every keyframe of the new window is within `threshold` of some keyframe of the
/// previous one: the scene did not change, so its embedding can be reused.
pub fn scene_unchanged(previous: &[Vec<f32>], current: &[Vec<f32>], threshold: f32) -> bool {
    !previous.is_empty()
        && !current.is_empty()
        && current
            .iter()
            .all(|c| previous.iter().any(|p| feature_distance(p, c) <= threshold))
}

/// Buckets frames into media-time windows and applies the selector.
pub struct Windower {
    length: f64,
    selector: Box<dyn KeyframeSelector>,
    current: Option<u64>,
    frames: Vec<Frame>,
    features: Vec<Vec<f32>>,
}

impl Windower {
    pub fn new(length: Duration, selector: Box<dyn KeyframeSelector>) -> Windower {
        Windower {
            length: length.as_secs_f64(),
            selector,
            current: None,
            frames: Vec::new(),
            features: Vec::new(),
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
        self.features.push(thumbnail_lab(&frame.image));
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
