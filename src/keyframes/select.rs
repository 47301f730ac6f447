//! Which of a window's sampled frames CLIP sees, and when a window shows the scene its
//! source's previous one did.

use super::cluster;
use super::features::feature_distance;
use crate::ingest::Frame;

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

/// The cheap features of a source's last window whose embedding was computed. A later
/// window that shows the same scene ([`scene_unchanged`]) can reuse that embedding; the
/// reference moves only when a window is embedded, so slow drift still adds up to a fresh
/// embedding.
#[derive(Debug, Clone, Default)]
pub struct LastScene {
    features: Option<Vec<Vec<f32>>>,
}

impl LastScene {
    /// The window shows the remembered scene, and `skip_unchanged` allows reusing it.
    pub fn unchanged(&self, config: &super::KeyframeConfig, features: &[Vec<f32>]) -> bool {
        config.skip_unchanged
            && self
                .features
                .as_ref()
                .is_some_and(|previous| scene_unchanged(previous, features, config.scene_threshold))
    }

    /// A window whose embedding is being computed becomes the reference.
    pub fn remember(&mut self, features: Vec<Vec<f32>>) {
        self.features = Some(features);
    }
}
