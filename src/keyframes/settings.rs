//! The `[window]` and `[keyframes]` tables: how long a window is, which of its frames CLIP
//! sees, how their embeddings become the window's, and when a window is an unchanged scene.
//!
//! Rules: [`KeyframeConfig::selector`] is the one place a selector is built from settings,
//! so the daemon and the tuner see the same keyframes. [`Aggregation`] lives here, beside
//! the selection it completes, because it is the same table's key and every later stage
//! (the pixels CLIP gets, the embedding stored, the scores) reads it from here.

use std::time::Duration;

use serde::Deserialize;

use super::select::{AllFrames, ClusterSelector, KeyframeSelector, DEFAULT_SCENE_THRESHOLD};
use crate::settings::{Invalid, Setting};

/// Which frames of a window CLIP sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Every sampled frame.
    All,
    /// PCA + k-means keyframes (paper 000).
    Cluster,
}

/// How a window's keyframes become one embedding and one ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Mean of the keyframes' normalised embeddings (papers 002/003).
    #[default]
    Mean,
    /// The keyframes tiled in time order into one 3×3 (or 2×2 for ≤ 4) super image, one
    /// CLIP pass (paper 000, after SIFAR); see `clip::super_image`.
    Grid,
    /// Each keyframe scored on its own; a label keeps its best probability (and that
    /// frame's cosine). The stored embedding is the mean.
    Max,
}

/// What of a window CLIP sees, and how the result is combined.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyframeConfig {
    pub select: Selection,
    pub k: usize,
    pub aggregate: Aggregation,
    /// Reuse the previous window's embedding when the scene did not change.
    pub skip_unchanged: bool,
    pub scene_threshold: f32,
}

impl Default for KeyframeConfig {
    fn default() -> Self {
        KeyframeConfig {
            select: Selection::Cluster,
            k: 5,
            aggregate: Aggregation::Mean,
            skip_unchanged: true,
            scene_threshold: DEFAULT_SCENE_THRESHOLD,
        }
    }
}

impl KeyframeConfig {
    /// The keyframe selector these settings ask for.
    pub fn selector(&self) -> Box<dyn KeyframeSelector> {
        match self.select {
            Selection::All => Box::new(AllFrames),
            Selection::Cluster => Box::new(ClusterSelector {
                duplicate_distance: self.scene_threshold,
                ..ClusterSelector::new(self.k)
            }),
        }
    }
}

/// The `[keyframes]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyframeSection {
    select: Option<Selection>,
    k: Option<Setting<usize>>,
    aggregate: Option<Aggregation>,
    skip_unchanged: Option<bool>,
    scene_threshold: Option<Setting<f32>>,
}

impl KeyframeSection {
    pub fn validate(&self) -> Result<KeyframeConfig, Invalid> {
        let mut keyframes = KeyframeConfig::default();
        if let Some(s) = self.select {
            keyframes.select = s;
        }
        if let Some(k) = &self.k {
            if !(1..=64).contains(k.get()) {
                return Err(Invalid::at(
                    "keyframes.k",
                    k,
                    format!("expected 1 to 64 keyframes, got {}", k.get()),
                ));
            }
            keyframes.k = *k.get();
        }
        if let Some(a) = self.aggregate {
            keyframes.aggregate = a;
        }
        if let Some(s) = self.skip_unchanged {
            keyframes.skip_unchanged = s;
        }
        if let Some(t) = &self.scene_threshold {
            if !(t.get().is_finite() && *t.get() >= 0.0) {
                return Err(Invalid::at(
                    "keyframes.scene_threshold",
                    t,
                    "expected a non-negative distance",
                ));
            }
            keyframes.scene_threshold = *t.get();
        }
        Ok(keyframes)
    }
}

/// The `[window]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSection {
    seconds: Option<Setting<f64>>,
}

impl WindowSection {
    /// Ten seconds unless told otherwise.
    pub fn validate(&self) -> Result<Duration, Invalid> {
        match &self.seconds {
            None => Ok(Duration::from_secs(10)),
            Some(s) => {
                let v = *s.get();
                if !(v.is_finite() && (0.1..=86_400.0).contains(&v)) {
                    return Err(Invalid::at(
                        "window.seconds",
                        s,
                        format!("expected seconds in [0.1, 86400], got {v}"),
                    ));
                }
                Ok(Duration::from_secs_f64(v))
            }
        }
    }
}
