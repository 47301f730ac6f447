//! Learned label embeddings ("prompts" mode): the labels' text embeddings are trained on
//! frozen video embeddings and then pulled back toward the zero-shot ones.
//!
//! Rules:
//! - Start from the zero-shot prompt-ensemble embeddings; the logits are CLIP's own,
//!   [`LOGIT_SCALE`] × cosine(video, label), so a learned file drops into the daemon's
//!   unchanged scoring.
//! - Full-batch Adam on the cross-entropy; the epoch with the best validation accuracy is
//!   kept (ties keep the earlier, closer to zero-shot), so no epoch count needs tuning.
//! - The result is normalize((1 − α)·zero-shot + α·learned): α = 1 keeps only what was
//!   learned, α = 0 is zero-shot. A middle α keeps some of CLIP's generalisation to videos
//!   unlike the training set (as WiSE-FT does for weights).

use super::error::TuneError;
use super::probe::{accuracy, argmax, Labelled};
use cliptag::classify::LOGIT_SCALE;

#[derive(Debug, Clone, clap::Args)]
pub struct PromptSettings {
    #[arg(long, default_value_t = 300)]
    pub epochs: usize,
    #[arg(long, default_value_t = 2e-3)]
    pub learning_rate: f64,
    /// Weight of the learned embeddings against the zero-shot ones (0 = zero-shot, 1 =
    /// learned only).
    #[arg(long, default_value_t = 0.5)]
    pub interpolation: f64,
}

impl PromptSettings {
    /// Values the flags' types allow but learning cannot use.
    pub fn validate(&self) -> Result<(), TuneError> {
        if !(0.0..=1.0).contains(&self.interpolation) {
            return Err(TuneError::Training(format!(
                "--interpolation must be in [0, 1], got {}",
                self.interpolation
            )));
        }
        Ok(())
    }
}

impl Default for PromptSettings {
    fn default() -> Self {
        PromptSettings {
            epochs: 300,
            learning_rate: 2e-3,
            interpolation: 0.5,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LearnedEmbeddings {
    /// One unit vector per class, after the interpolation.
    pub embeddings: Vec<Vec<f32>>,
    pub best_epoch: usize,
    /// Per epoch: (training loss, validation accuracy) before that epoch's step.
    pub curve: Vec<(f64, f64)>,
}

/// Cosine logits of every video against every label.
pub fn cosine_predict(labels: &[Vec<f32>], x: &[f32]) -> usize {
    let scores: Vec<f32> = labels.iter().map(|l| cliptag::clip::cosine(x, l)).collect();
    argmax(&scores)
}

pub fn cosine_accuracy(labels: &[Vec<f32>], set: &Labelled) -> f64 {
    accuracy(set.x.iter().map(|x| cosine_predict(labels, x)), &set.y)
}

pub fn learn(
    zero_shot: &[Vec<f32>],
    train: &Labelled,
    val: &Labelled,
    settings: &PromptSettings,
) -> LearnedEmbeddings {
    let classes = zero_shot.len();
    let dim = zero_shot.first().map_or(0, Vec::len);
    let scale = LOGIT_SCALE as f64;
    let mut t: Vec<Vec<f64>> = zero_shot
        .iter()
        .map(|e| unit(&e.iter().map(|&v| v as f64).collect::<Vec<_>>()))
        .collect();
    let (mut m, mut v) = (vec![vec![0.0; dim]; classes], vec![vec![0.0; dim]; classes]);
    let (beta1, beta2, eps) = (0.9f64, 0.999f64, 1e-8);
    let as_f32 = |t: &[Vec<f64>]| -> Vec<Vec<f32>> {
        t.iter()
            .map(|r| r.iter().map(|&x| x as f32).collect())
            .collect()
    };
    let mut best = (cosine_accuracy(zero_shot, val), 0usize, t.clone());
    let mut curve = Vec::with_capacity(settings.epochs);
    let n = train.y.len().max(1) as f64;
    for epoch in 1..=settings.epochs {
        let norms: Vec<f64> = t.iter().map(|r| norm(r)).collect();
        let units: Vec<Vec<f64>> = t
            .iter()
            .zip(&norms)
            .map(|(r, n)| r.iter().map(|x| x / n).collect())
            .collect();
        let mut grad = vec![vec![0.0f64; dim]; classes];
        let mut loss = 0.0;
        for (x, &label) in train.x.iter().zip(&train.y) {
            let x: Vec<f64> = unit(&x.iter().map(|&v| v as f64).collect::<Vec<_>>());
            let cos: Vec<f64> = units.iter().map(|u| dot(u, &x)).collect();
            let logits: Vec<f64> = cos.iter().map(|c| scale * c).collect();
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
            loss += sum.ln() + max - logits[label];
            for c in 0..classes {
                let p = (logits[c] - max).exp() / sum - if c == label { 1.0 } else { 0.0 };
                // d cos / d t = (x − cos·u) / ‖t‖
                let k = p * scale / (n * norms[c]);
                for ((g, &xi), &ui) in grad[c].iter_mut().zip(&x).zip(&units[c]) {
                    *g += k * (xi - cos[c] * ui);
                }
            }
        }
        curve.push((loss / n, cosine_accuracy(&as_f32(&t), val)));
        let (bc1, bc2) = (
            1.0 - beta1.powi(epoch as i32),
            1.0 - beta2.powi(epoch as i32),
        );
        for c in 0..classes {
            for i in 0..dim {
                let g = grad[c][i];
                m[c][i] = beta1 * m[c][i] + (1.0 - beta1) * g;
                v[c][i] = beta2 * v[c][i] + (1.0 - beta2) * g * g;
                t[c][i] -=
                    settings.learning_rate * (m[c][i] / bc1) / ((v[c][i] / bc2).sqrt() + eps);
            }
        }
        let val_accuracy = cosine_accuracy(&as_f32(&t), val);
        if val_accuracy > best.0 {
            best = (val_accuracy, epoch, t.clone());
        }
    }
    let alpha = settings.interpolation.clamp(0.0, 1.0);
    let embeddings = zero_shot
        .iter()
        .zip(&best.2)
        .map(|(z, learned)| {
            let z = unit(&z.iter().map(|&v| v as f64).collect::<Vec<_>>());
            let learned = unit(learned);
            let mixed: Vec<f64> = z
                .iter()
                .zip(&learned)
                .map(|(a, b)| (1.0 - alpha) * a + alpha * b)
                .collect();
            unit(&mixed).into_iter().map(|x| x as f32).collect()
        })
        .collect();
    LearnedEmbeddings {
        embeddings,
        best_epoch: best.1,
        curve,
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt().max(1e-12)
}

fn unit(a: &[f64]) -> Vec<f64> {
    let n = norm(a);
    a.iter().map(|x| x / n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn learned_labels_fix_a_misleading_zero_shot_and_alpha_interpolates() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let dim = 12;
        let centres: Vec<Vec<f32>> = (0..3)
            .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let sample = |rng: &mut rand_chacha::ChaCha8Rng, per: usize| {
            let mut set = Labelled::default();
            for (c, centre) in centres.iter().enumerate() {
                for _ in 0..per {
                    let v: Vec<f32> = centre
                        .iter()
                        .map(|x| x + rng.random_range(-0.3..0.3))
                        .collect();
                    set.x.push(cliptag::clip::l2_normalized(v));
                    set.y.push(c);
                }
            }
            set
        };
        let (train, val) = (sample(&mut rng, 8), sample(&mut rng, 8));
        // Zero-shot embeddings with classes 0 and 1 swapped: zero-shot gets those wrong.
        let zero_shot: Vec<Vec<f32>> = [1, 0, 2]
            .iter()
            .map(|&i| cliptag::clip::l2_normalized(centres[i].clone()))
            .collect();
        assert!(cosine_accuracy(&zero_shot, &val) < 0.5);
        let full = learn(
            &zero_shot,
            &train,
            &val,
            &PromptSettings {
                interpolation: 1.0,
                ..Default::default()
            },
        );
        assert!(
            cosine_accuracy(&full.embeddings, &val) > 0.9,
            "{:?}",
            &full.curve[..5]
        );
        assert!(full.best_epoch > 0);
        assert!(full.curve.first().unwrap().0 > full.curve.last().unwrap().0);
        let none = learn(
            &zero_shot,
            &train,
            &val,
            &PromptSettings {
                interpolation: 0.0,
                ..Default::default()
            },
        );
        for (a, b) in none.embeddings.iter().zip(&zero_shot) {
            assert!(cliptag::clip::cosine(a, b) > 0.99999);
        }
        for e in &full.embeddings {
            assert!((e.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }
}
