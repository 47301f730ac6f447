//! Labels with their text embeddings, and the scores of a window against them.

use super::aggregate::mean_embedding;
use super::head::ProbeHead;
use super::labels::Label;

/// CLIP's learned temperature, clamped to 100 in training; the exported ONNX towers do not
/// carry it.
pub const LOGIT_SCALE: f32 = 100.0;

/// Labels with their (normalised) text embeddings, ready to score windows.
#[derive(Debug, Clone)]
pub struct LabelSet {
    pub labels: Vec<Label>,
    pub embeddings: Vec<Vec<f32>>,
    /// A trained classifier that replaces cosine × [`LOGIT_SCALE`] as the logits; its rows
    /// are in the order of `labels`. Cosines are still reported, as the zero-shot view.
    pub head: Option<ProbeHead>,
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

    /// What the scores depend on, as a short hex digest: every label's text and embedding,
    /// and the head's weights. Two runs with the same fingerprint score a window alike.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for (label, embedding) in self.labels.iter().zip(&self.embeddings) {
            hasher.update(label.text.as_bytes());
            hasher.update([0]);
            for v in embedding {
                hasher.update(v.to_le_bytes());
            }
        }
        if let Some(head) = &self.head {
            for v in head.weights.iter().flatten().chain(&head.bias) {
                hasher.update(v.to_le_bytes());
            }
        }
        hasher.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
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
}
