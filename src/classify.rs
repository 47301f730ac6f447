//! Classify: window embedding → label probabilities.
//!
//! Rules:
//! - A window's embedding is the re-normalised mean of its keyframes' normalised embeddings
//!   (mean pooling, as ViFi-CLIP and CLIP4Clip do); [`Aggregation`] is the seam for others.
//! - Each label's text embedding is the re-normalised mean of its prompts' normalised
//!   embeddings (CLIP's prompt ensembling). Class names ("dog") go through the templates;
//!   captions, lines starting with an article ("a person opening a fridge"), are used as
//!   written, since "a photo of a a person…" would only blur them.
//! - Scores are cosine × [`LOGIT_SCALE`], softmaxed over the label set: CLIP cosines cluster
//!   tightly and drift between models, so labels are ranked against each other rather than
//!   against a raw threshold.

use crate::clip::l2_normalized;
use crate::Disposition;

/// CLIP's learned temperature, clamped to 100 in training; the exported ONNX towers do not
/// carry it.
pub const LOGIT_SCALE: f32 = 100.0;

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("labels file {path}: cannot read: {reason}")]
    Read { path: String, reason: String },
    #[error("labels file {path}, line {line}: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("labels file {path}: no labels (every line is blank or a # comment)")]
    Empty { path: String },
    #[error("classifier head {path}: {reason}")]
    Head { path: String, reason: String },
    #[error("label embeddings {path}: {reason}")]
    Learned { path: String, reason: String },
}

impl LabelError {
    pub fn disposition(&self) -> Disposition {
        Disposition::Stop
    }
}

/// One line of the labels file with the prompts that stand for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub text: String,
    pub prompts: Vec<String>,
}

/// Parse a labels file: one label per line, `#` starts a comment line, blank lines are
/// skipped, surrounding whitespace is trimmed. Duplicates and control characters are errors.
pub fn parse_labels(text: &str, path: &str) -> Result<Vec<String>, LabelError> {
    let mut labels: Vec<String> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let label = raw.trim();
        if label.is_empty() || label.starts_with('#') {
            continue;
        }
        let err = |reason: String| LabelError::Line {
            path: path.to_string(),
            line,
            reason,
        };
        if let Some(c) = label.chars().find(|c| c.is_control()) {
            return Err(err(format!("control character {c:?} in label {label:?}")));
        }
        if label.chars().count() > 300 {
            return Err(err(
                "label longer than 300 characters; CLIP reads at most 77 tokens".into(),
            ));
        }
        if labels.iter().any(|l| l == label) {
            return Err(err(format!("duplicate label {label:?}")));
        }
        labels.push(label.to_string());
    }
    if labels.is_empty() {
        return Err(LabelError::Empty {
            path: path.to_string(),
        });
    }
    Ok(labels)
}

pub fn load_labels(path: &std::path::Path) -> Result<Vec<String>, LabelError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| LabelError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        LabelError::Line {
            path: shown.clone(),
            line,
            reason: "not valid UTF-8".into(),
        }
    })?;
    parse_labels(&text, &shown)
}

/// A caption already reads as a sentence; a class name needs a template around it.
pub fn is_caption(label: &str) -> bool {
    let lower = label.to_lowercase();
    ["a ", "an ", "the "].iter().any(|a| lower.starts_with(a))
}

pub fn prompts_for(label: &str, templates: &[String]) -> Vec<String> {
    if is_caption(label) {
        vec![label.to_string()]
    } else {
        templates
            .iter()
            .map(|t| t.replacen("{}", label, 1))
            .collect()
    }
}

pub fn expand_labels(labels: &[String], templates: &[String]) -> Vec<Label> {
    labels
        .iter()
        .map(|l| Label {
            text: l.clone(),
            prompts: prompts_for(l, templates),
        })
        .collect()
}

/// Re-normalised mean of normalised vectors.
pub fn mean_embedding<'a>(vectors: impl IntoIterator<Item = &'a [f32]>) -> Option<Vec<f32>> {
    let mut sum: Option<Vec<f32>> = None;
    for v in vectors {
        let v = l2_normalized(v.to_vec());
        match sum.as_mut() {
            None => sum = Some(v),
            Some(s) => s.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
        }
    }
    sum.map(l2_normalized)
}

/// How a window's keyframes become one embedding and one ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// Mean of the keyframes' normalised embeddings (papers 002/003).
    #[default]
    Mean,
    /// The keyframes tiled in time order into one 3×3 (or 2×2 for ≤ 4) super image, one
    /// CLIP pass (paper 000, after SIFAR); see [`super_image`].
    Grid,
    /// Each keyframe scored on its own; a label keeps its best probability (and that
    /// frame's cosine). The stored embedding is the mean.
    Max,
}

/// The seam for learned aggregators (paper 002's transformer over frame embeddings): turn
/// the keyframes' embeddings into the window's embedding.
pub trait Aggregator: Send {
    fn aggregate(&self, frame_embeddings: &[Vec<f32>]) -> Option<Vec<f32>>;
}

impl Aggregator for Aggregation {
    fn aggregate(&self, frame_embeddings: &[Vec<f32>]) -> Option<Vec<f32>> {
        // Grid windows arrive as a single embedding already; Max stores the mean.
        mean_embedding(frame_embeddings.iter().map(Vec::as_slice))
    }
}

/// Tile up to nine frames, in time order, into a square super image for one CLIP pass.
///
/// Each frame is centre-cropped to a square (as CLIP's own preprocessing would) and resized
/// with the same PIL-exact bicubic to `tile` pixels — the model's input side — so the grid
/// is 3·tile (or 2·tile for up to four frames, 1·tile for one) and the model's ordinary
/// preprocessing then shrinks the whole grid to its input: each frame covers a third (or
/// half) of CLIP's view. Unused cells stay black.
pub fn super_image(frames: &[&crate::ingest::RgbImage], tile: u32) -> crate::ingest::RgbImage {
    use crate::clip::{center_crop, resize, CropRounding, Filter};
    let frames = &frames[..frames.len().min(9)];
    let side = match frames.len() {
        0 | 1 => 1,
        2..=4 => 2,
        _ => 3,
    };
    let size = side * tile;
    let mut data = vec![0u8; (size * size * 3) as usize];
    for (n, frame) in frames.iter().enumerate() {
        let short = frame.width.min(frame.height);
        let square = center_crop(frame, short, short, CropRounding::Floor);
        let cell = resize(&square, tile, tile, Filter::Bicubic);
        let (row, col) = (n as u32 / side, n as u32 % side);
        for y in 0..tile {
            let src = (y * tile * 3) as usize;
            let dst = (((row * tile + y) * size + col * tile) * 3) as usize;
            data[dst..dst + (tile * 3) as usize]
                .copy_from_slice(&cell.data[src..src + (tile * 3) as usize]);
        }
    }
    crate::ingest::RgbImage {
        width: size,
        height: size,
        data,
    }
}

/// Labels with their (normalised) text embeddings, ready to score windows.
#[derive(Debug, Clone)]
pub struct LabelSet {
    pub labels: Vec<Label>,
    pub embeddings: Vec<Vec<f32>>,
    /// A trained classifier that replaces cosine × [`LOGIT_SCALE`] as the logits; its rows
    /// are in the order of `labels`. Cosines are still reported, as the zero-shot view.
    pub head: Option<ProbeHead>,
}

/// The format tag of [`ProbeHead`] files; bumped when their meaning changes.
pub const PROBE_HEAD_FORMAT: &str = "cliptag-probe-head/1";

/// A linear classifier over one model's normalised window embeddings, as trained by
/// `cliptag-tune probe`: logits = W·e + b. Tied to the model id whose embeddings it was
/// trained on, since another model's (or variant's) embedding space is a different one.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeHead {
    pub format: String,
    pub model_id: String,
    pub classes: Vec<String>,
    /// One row per class, each of the embedding's dimension.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

/// The format tag of [`LearnedLabels`] files.
pub const LEARNED_LABELS_FORMAT: &str = "cliptag-label-embeddings/1";

/// Label embeddings learned by `cliptag-tune prompts` on one model's video embeddings; the
/// daemon uses them instead of encoding those labels' prompts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedLabels {
    pub format: String,
    pub model_id: String,
    pub labels: Vec<LearnedLabel>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedLabel {
    pub label: String,
    /// Unit length.
    pub embedding: Vec<f32>,
}

impl LearnedLabels {
    pub fn load(path: &std::path::Path) -> Result<LearnedLabels, LabelError> {
        let err = |reason: String| LabelError::Learned {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let learned: LearnedLabels = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "not a label-embedding file (JSON written by cliptag-tune prompts): {e}"
            ))
        })?;
        if learned.format != LEARNED_LABELS_FORMAT {
            return Err(err(format!(
                "format {:?}, expected {LEARNED_LABELS_FORMAT:?}",
                learned.format
            )));
        }
        let dim = learned.labels.first().map_or(0, |l| l.embedding.len());
        if dim == 0
            || learned
                .labels
                .iter()
                .any(|l| l.embedding.len() != dim || l.embedding.iter().any(|v| !v.is_finite()))
        {
            return Err(err(
                "expected one finite embedding of the same length per label".into(),
            ));
        }
        Ok(learned)
    }

    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    pub fn get(&self, label: &str) -> Option<&[f32]> {
        self.labels
            .iter()
            .find(|l| l.label == label)
            .map(|l| l.embedding.as_slice())
    }
}

impl ProbeHead {
    pub fn load(path: &std::path::Path) -> Result<ProbeHead, LabelError> {
        let err = |reason: String| LabelError::Head {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let head: ProbeHead = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "not a probe head (JSON written by cliptag-tune probe): {e}"
            ))
        })?;
        head.check().map_err(err)?;
        Ok(head)
    }

    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    fn check(&self) -> Result<(), String> {
        if self.format != PROBE_HEAD_FORMAT {
            return Err(format!(
                "format {:?}, expected {PROBE_HEAD_FORMAT:?}",
                self.format
            ));
        }
        let dim = self.weights.first().map_or(0, Vec::len);
        if self.classes.is_empty()
            || self.weights.len() != self.classes.len()
            || self.bias.len() != self.classes.len()
            || dim == 0
            || self.weights.iter().any(|row| row.len() != dim)
        {
            return Err(format!(
                "expected one weight row of equal length and one bias per class: {} classes, {} rows, {} biases",
                self.classes.len(),
                self.weights.len(),
                self.bias.len()
            ));
        }
        let values = self.weights.iter().flatten().chain(&self.bias);
        if values.into_iter().any(|v| !v.is_finite()) {
            return Err("weights or biases are not finite".into());
        }
        Ok(())
    }

    pub fn dim(&self) -> usize {
        self.weights.first().map_or(0, Vec::len)
    }

    pub fn logits(&self, embedding: &[f32]) -> Vec<f32> {
        self.weights
            .iter()
            .zip(&self.bias)
            .map(|(row, b)| row.iter().zip(embedding).map(|(w, x)| w * x).sum::<f32>() + b)
            .collect()
    }

    /// The head with its rows in the order of `labels`, which must be exactly its classes:
    /// a label the head was not trained on would get no score, and a class missing from
    /// the labels file would be stored under a label nobody asked for.
    pub fn for_labels(
        &self,
        labels: &[Label],
        path: &std::path::Path,
    ) -> Result<ProbeHead, LabelError> {
        let err = |reason: String| LabelError::Head {
            path: path.display().to_string(),
            reason,
        };
        let unknown: Vec<&str> = labels
            .iter()
            .map(|l| l.text.as_str())
            .filter(|l| !self.classes.iter().any(|c| c == l))
            .collect();
        let missing: Vec<&str> = self
            .classes
            .iter()
            .map(String::as_str)
            .filter(|c| !labels.iter().any(|l| l.text == *c))
            .collect();
        if !unknown.is_empty() || !missing.is_empty() {
            return Err(err(format!(
                "its classes must be the labels file's labels: labels without a class in the head: {unknown:?}; classes not in the labels file: {missing:?}"
            )));
        }
        let row = |label: &str| self.classes.iter().position(|c| c == label).unwrap_or(0);
        Ok(ProbeHead {
            classes: labels.iter().map(|l| l.text.clone()).collect(),
            weights: labels
                .iter()
                .map(|l| self.weights[row(&l.text)].clone())
                .collect(),
            bias: labels.iter().map(|l| self.bias[row(&l.text)]).collect(),
            ..self.clone()
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    pub label: String,
    /// 1-based.
    pub rank: u32,
    pub cosine: f32,
    pub probability: f32,
}

impl LabelSet {
    /// `prompt_embedding(prompt)` gives each prompt's embedding; labels average theirs.
    pub fn build<E>(
        labels: Vec<Label>,
        mut prompt_embedding: impl FnMut(&str) -> Result<Vec<f32>, E>,
    ) -> Result<LabelSet, E> {
        let mut embeddings = Vec::with_capacity(labels.len());
        for label in &labels {
            let prompts: Vec<Vec<f32>> = label
                .prompts
                .iter()
                .map(|p| prompt_embedding(p))
                .collect::<Result<_, _>>()?;
            embeddings.push(mean_embedding(prompts.iter().map(Vec::as_slice)).unwrap_or_default());
        }
        Ok(LabelSet {
            labels,
            embeddings,
            head: None,
        })
    }

    /// All labels ranked by probability; the caller trims to top-k / min probability.
    pub fn score(&self, window_embedding: &[f32]) -> Vec<LabelScore> {
        let cosines: Vec<f32> = self
            .embeddings
            .iter()
            .map(|e| crate::clip::cosine(window_embedding, e))
            .collect();
        let logits = match &self.head {
            Some(head) => head.logits(window_embedding),
            None => cosines.iter().map(|c| c * LOGIT_SCALE).collect(),
        };
        let probabilities = softmax(&logits);
        let scores: Vec<LabelScore> = self
            .labels
            .iter()
            .zip(cosines.iter().zip(&probabilities))
            .map(|(l, (&cosine, &probability))| LabelScore {
                label: l.text.clone(),
                rank: 0,
                cosine,
                probability,
            })
            .collect();
        ranked(scores)
    }

    /// Per label, the best probability over several frames (with that frame's cosine),
    /// ranked; the `max` aggregation. Probabilities then no longer sum to one.
    pub fn score_max(&self, frame_embeddings: &[Vec<f32>]) -> Vec<LabelScore> {
        let mut best: Vec<LabelScore> = Vec::new();
        for e in frame_embeddings {
            for s in self.score(e) {
                match best.iter_mut().find(|b| b.label == s.label) {
                    Some(b) if b.probability < s.probability => *b = s,
                    Some(_) => {}
                    None => best.push(s),
                }
            }
        }
        ranked(best)
    }

    pub fn top(
        &self,
        window_embedding: &[f32],
        top_k: usize,
        min_probability: f32,
    ) -> Vec<LabelScore> {
        self.score(window_embedding)
            .into_iter()
            .take(top_k)
            .filter(|s| s.probability >= min_probability)
            .collect()
    }
}

/// Sort by probability (ties by label, so output is stable) and number the ranks from 1.
fn ranked(mut scores: Vec<LabelScore>) -> Vec<LabelScore> {
    scores.sort_by(|a, b| {
        b.probability
            .total_cmp(&a.probability)
            .then_with(|| a.label.cmp(&b.label))
    });
    for (i, s) in scores.iter_mut().enumerate() {
        s.rank = i as u32 + 1;
    }
    scores
}

pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_file_rules() {
        let text = "# my labels\n\ndog\n  a person opening a fridge  \n# cat\ncar\n";
        assert_eq!(
            parse_labels(text, "l.txt").unwrap(),
            vec!["dog", "a person opening a fridge", "car"]
        );
        let e = parse_labels("dog\ncat\ndog\n", "l.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("duplicate"), "{e}");
        let e = parse_labels("dog\nca\tt\n", "l.txt")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("control"), "{e}");
        assert!(matches!(
            parse_labels("# only\n\n", "l.txt"),
            Err(LabelError::Empty { .. })
        ));
    }

    #[test]
    fn captions_are_used_verbatim_class_names_get_templates() {
        let t = vec![
            "a photo of a {}.".to_string(),
            "a video of a {}.".to_string(),
        ];
        assert_eq!(
            prompts_for("dog", &t),
            vec!["a photo of a dog.", "a video of a dog."]
        );
        assert_eq!(
            prompts_for("a person carrying a ladder", &t),
            vec!["a person carrying a ladder"]
        );
        assert_eq!(prompts_for("dog on the sofa", &t).len(), 2);
        assert_eq!(prompts_for("The red car", &t), vec!["The red car"]);
    }

    #[test]
    fn softmax_ranks_and_sums_to_one() {
        let set = LabelSet {
            labels: ["a", "b", "c"]
                .iter()
                .map(|t| Label {
                    text: t.to_string(),
                    prompts: vec![],
                })
                .collect(),
            embeddings: vec![
                vec![1.0, 0.0],
                vec![0.0, 1.0],
                vec![std::f32::consts::FRAC_1_SQRT_2; 2],
            ],
            head: None,
        };
        let s = set.score(&[1.0, 0.1]);
        assert_eq!(
            s.iter().map(|x| x.label.as_str()).collect::<Vec<_>>(),
            vec!["a", "c", "b"]
        );
        assert_eq!(s.iter().map(|x| x.rank).collect::<Vec<_>>(), vec![1, 2, 3]);
        let total: f32 = s.iter().map(|x| x.probability).sum();
        assert!((total - 1.0).abs() < 1e-5);
        assert_eq!(set.top(&[1.0, 0.1], 2, 0.0).len(), 2);
        assert_eq!(set.top(&[1.0, 0.1], 3, 0.5).len(), 1);
    }

    #[test]
    fn a_probe_head_replaces_the_logits_and_must_match_the_labels() {
        let labels: Vec<Label> = ["cat", "dog"]
            .iter()
            .map(|t| Label {
                text: t.to_string(),
                prompts: vec![],
            })
            .collect();
        // Stored in another order than the labels file: rows follow their class names.
        let head = ProbeHead {
            format: PROBE_HEAD_FORMAT.into(),
            model_id: "m".into(),
            classes: vec!["dog".into(), "cat".into()],
            weights: vec![vec![0.0, 4.0], vec![4.0, 0.0]],
            bias: vec![0.5, 0.0],
        };
        let path = std::path::Path::new("head.json");
        let ordered = head.for_labels(&labels, path).unwrap();
        assert_eq!(ordered.classes, vec!["cat", "dog"]);
        assert_eq!(ordered.bias, vec![0.0, 0.5]);
        let set = LabelSet {
            labels: labels.clone(),
            // Cosines alone would pick "cat" for every input.
            embeddings: vec![vec![1.0, 0.0], vec![1.0, 0.0]],
            head: Some(ordered),
        };
        let s = set.score(&[0.0, 1.0]);
        assert_eq!(s[0].label, "dog");
        let expected = 1.0 / (1.0 + (-4.5f32).exp());
        assert!((s[0].probability - expected).abs() < 1e-5, "{s:?}");
        assert_eq!(s[0].cosine, 0.0);

        let three: Vec<Label> = ["cat", "dog", "car"]
            .iter()
            .map(|t| Label {
                text: t.to_string(),
                prompts: vec![],
            })
            .collect();
        let e = head.for_labels(&three, path).unwrap_err().to_string();
        assert!(e.contains("head.json") && e.contains("\"car\""), "{e}");
        let bad = ProbeHead {
            bias: vec![0.0],
            ..head.clone()
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.json");
        bad.save(&file).unwrap();
        let e = ProbeHead::load(&file).unwrap_err().to_string();
        assert!(
            e.contains("bad.json") && e.contains("one bias per class"),
            "{e}"
        );
        head.save(&file).unwrap();
        assert_eq!(ProbeHead::load(&file).unwrap(), head);
    }

    #[test]
    fn mean_embedding_is_unit_norm() {
        let m = mean_embedding([[3.0f32, 0.0].as_slice(), [0.0, 0.5].as_slice()]).unwrap();
        assert!((m[0] - m[1]).abs() < 1e-6);
        assert!((m.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
