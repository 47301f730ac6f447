//! Linear probe (paper 002): multinomial logistic regression on frozen, mean-pooled video
//! embeddings, its L2 strength chosen on the validation split.
//!
//! Rules:
//! - Fitted by accelerated gradient descent on the mean cross-entropy plus λ/2·‖W‖² (the
//!   bias is not penalised), with the step 1/L from the bound L ≤ ½·max‖[x, 1]‖² + λ, so
//!   no learning rate needs tuning. Arithmetic in f64; the head is stored as f32.
//! - λ comes from a log sweep; the best validation accuracy wins, ties go to the larger λ
//!   (the simpler model). Test accuracy is reported, never used to choose.
//! - k-shot subsets are drawn per class from the training split by a seeded shuffle.

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The λ sweep, strongest last.
pub const L2_SWEEP: [f64; 8] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 1.0];

/// Shots per class reported by [`probe_report`], as in paper 002.
pub const SHOTS: [usize; 5] = [1, 2, 4, 8, 16];

#[derive(Debug, Clone, PartialEq)]
pub struct LogisticRegression {
    /// One row per class.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

impl LogisticRegression {
    /// Fit on `x` (rows of equal length) with labels `y` < `classes`.
    pub fn fit(x: &[Vec<f32>], y: &[usize], classes: usize, l2: f64, iterations: usize) -> Self {
        let n = x.len().max(1) as f64;
        let dim = x.first().map_or(0, Vec::len);
        let width = dim + 1; // the bias as a last column
        let max_norm = x
            .iter()
            .map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() + 1.0)
            .fold(1.0, f64::max);
        let step = 1.0 / (0.5 * max_norm + l2);
        let mut theta = vec![0.0f64; classes * width];
        let mut previous = theta.clone();
        let mut lookahead = theta.clone();
        let mut grad = vec![0.0f64; classes * width];
        let mut momentum = 1.0f64;
        let mut last_loss = f64::INFINITY;
        for _ in 0..iterations {
            let loss = loss_and_gradient(&lookahead, x, y, classes, width, l2, n, &mut grad);
            // Adaptive restart: momentum that overshoots is dropped.
            if loss > last_loss {
                momentum = 1.0;
                lookahead.copy_from_slice(&theta);
                last_loss = f64::INFINITY;
                continue;
            }
            last_loss = loss;
            let grad_norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
            previous.copy_from_slice(&theta);
            for ((t, l), g) in theta.iter_mut().zip(&lookahead).zip(&grad) {
                *t = l - step * g;
            }
            if grad_norm < 1e-7 {
                break;
            }
            let next = (1.0 + (1.0 + 4.0 * momentum * momentum).sqrt()) / 2.0;
            let beta = (momentum - 1.0) / next;
            momentum = next;
            for ((l, t), p) in lookahead.iter_mut().zip(&theta).zip(&previous) {
                *l = t + beta * (t - p);
            }
        }
        LogisticRegression {
            weights: (0..classes)
                .map(|c| {
                    theta[c * width..c * width + dim]
                        .iter()
                        .map(|&v| v as f32)
                        .collect()
                })
                .collect(),
            bias: (0..classes)
                .map(|c| theta[c * width + dim] as f32)
                .collect(),
        }
    }

    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        self.weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| w.iter().zip(x).map(|(w, x)| w * x).sum::<f32>() + b)
            .collect()
    }

    pub fn predict(&self, x: &[f32]) -> usize {
        argmax(&self.logits(x))
    }

    pub fn accuracy(&self, x: &[Vec<f32>], y: &[usize]) -> f64 {
        accuracy(x.iter().map(|r| self.predict(r)), y)
    }
}

pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
        .map_or(0, |(i, _)| i)
}

pub fn accuracy(predicted: impl Iterator<Item = usize>, truth: &[usize]) -> f64 {
    let correct = predicted.zip(truth).filter(|(p, t)| p == *t).count();
    correct as f64 / truth.len().max(1) as f64
}

#[allow(clippy::too_many_arguments)]
fn loss_and_gradient(
    theta: &[f64],
    x: &[Vec<f32>],
    y: &[usize],
    classes: usize,
    width: usize,
    l2: f64,
    n: f64,
    grad: &mut [f64],
) -> f64 {
    let dim = width - 1;
    grad.fill(0.0);
    let mut loss = 0.0;
    let mut logits = vec![0.0f64; classes];
    for (row, &label) in x.iter().zip(y) {
        for (c, logit) in logits.iter_mut().enumerate() {
            let w = &theta[c * width..c * width + dim];
            *logit =
                w.iter().zip(row).map(|(w, &v)| w * v as f64).sum::<f64>() + theta[c * width + dim];
        }
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        loss += sum.ln() + max - logits[label];
        for (c, &logit) in logits.iter().enumerate() {
            let p = (logit - max).exp() / sum - if c == label { 1.0 } else { 0.0 };
            let g = &mut grad[c * width..(c + 1) * width];
            for (g, &v) in g[..dim].iter_mut().zip(row) {
                *g += p * v as f64;
            }
            g[dim] += p;
        }
    }
    let mut penalty = 0.0;
    for c in 0..classes {
        for i in 0..dim {
            let t = theta[c * width + i];
            grad[c * width + i] = grad[c * width + i] / n + l2 * t;
            penalty += t * t;
        }
        grad[c * width + dim] /= n;
    }
    loss / n + 0.5 * l2 * penalty
}

/// Embeddings with their class indices.
#[derive(Debug, Clone, Default)]
pub struct Labelled {
    pub x: Vec<Vec<f32>>,
    pub y: Vec<usize>,
}

/// One row of the report: a training set size, the λ chosen for it, and its accuracies.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeRow {
    /// Per class; `None` for the whole training split.
    pub shots: Option<usize>,
    pub train_size: usize,
    pub l2: f64,
    pub val_accuracy: f64,
    pub test_accuracy: f64,
}

#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub rows: Vec<ProbeRow>,
    /// Fitted on the whole training split with its chosen λ.
    pub model: LogisticRegression,
}

/// Iterations per fit: enough for the sweep's weakest λ to settle on CLIP-sized inputs.
pub const ITERATIONS: usize = 1500;

/// Fit with every λ of the sweep; the one with the best validation accuracy.
pub fn fit_with_sweep(
    train: &Labelled,
    val: &Labelled,
    classes: usize,
) -> (LogisticRegression, f64, f64) {
    let mut best: Option<(LogisticRegression, f64, f64)> = None;
    for &l2 in &L2_SWEEP {
        let model = LogisticRegression::fit(&train.x, &train.y, classes, l2, ITERATIONS);
        let val_accuracy = model.accuracy(&val.x, &val.y);
        // `>=`: ties go to the larger λ, which comes later in the sweep.
        if best.as_ref().is_none_or(|b| val_accuracy >= b.2) {
            best = Some((model, l2, val_accuracy));
        }
    }
    best.unwrap_or_else(|| {
        (
            LogisticRegression::fit(&train.x, &train.y, classes, 1.0, ITERATIONS),
            1.0,
            0.0,
        )
    })
}

/// The first `shots` training examples of each class after a seeded shuffle.
pub fn k_shot(train: &Labelled, classes: usize, shots: usize, seed: u64) -> Labelled {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (shots as u64).rotate_left(32));
    let mut out = Labelled::default();
    for class in 0..classes {
        let mut members: Vec<usize> = (0..train.y.len())
            .filter(|&i| train.y[i] == class)
            .collect();
        members.shuffle(&mut rng);
        for &i in members.iter().take(shots) {
            out.x.push(train.x[i].clone());
            out.y.push(class);
        }
    }
    out
}

/// Paper 002's few-shot table: 1/2/4/8/16 shots per class (while the training split has
/// more than that many for some class) and the whole training split.
pub fn probe_report(
    train: &Labelled,
    val: &Labelled,
    test: &Labelled,
    classes: usize,
    seed: u64,
) -> ProbeReport {
    let largest_class = (0..classes)
        .map(|c| train.y.iter().filter(|&&y| y == c).count())
        .max()
        .unwrap_or(0);
    let mut rows = Vec::new();
    for shots in SHOTS.into_iter().filter(|&s| s < largest_class) {
        let subset = k_shot(train, classes, shots, seed);
        let (model, l2, val_accuracy) = fit_with_sweep(&subset, val, classes);
        rows.push(ProbeRow {
            shots: Some(shots),
            train_size: subset.y.len(),
            l2,
            val_accuracy,
            test_accuracy: model.accuracy(&test.x, &test.y),
        });
    }
    let (model, l2, val_accuracy) = fit_with_sweep(train, val, classes);
    rows.push(ProbeRow {
        shots: None,
        train_size: train.y.len(),
        l2,
        val_accuracy,
        test_accuracy: model.accuracy(&test.x, &test.y),
    });
    ProbeReport { rows, model }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors around one centre per class, with seeded noise.
    fn blobs(classes: usize, per_class: usize, dim: usize, seed: u64) -> Labelled {
        use rand::Rng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..classes)
            .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let mut out = Labelled::default();
        for (class, centre) in centres.iter().enumerate() {
            for _ in 0..per_class {
                let v: Vec<f32> = centre
                    .iter()
                    .map(|c| c + rng.random_range(-0.6..0.6))
                    .collect();
                out.x.push(cliptag::clip::l2_normalized(v));
                out.y.push(class);
            }
        }
        out
    }

    #[test]
    fn fit_separates_blobs_and_beats_chance_with_few_shots() {
        let train = blobs(4, 20, 16, 1);
        let model = LogisticRegression::fit(&train.x, &train.y, 4, 1e-3, ITERATIONS);
        assert!(model.accuracy(&train.x, &train.y) > 0.95);
        // The gradient at the optimum vanishes: a longer fit barely moves the weights.
        let longer = LogisticRegression::fit(&train.x, &train.y, 4, 1e-3, 4 * ITERATIONS);
        let drift: f32 = model
            .weights
            .iter()
            .flatten()
            .zip(longer.weights.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(drift < 1e-2, "drift {drift}");

        // Same centres (same seed), other noise draws for val/test.
        let all = blobs(4, 40, 16, 1);
        let pick = |range: std::ops::Range<usize>| Labelled {
            x: all
                .x
                .iter()
                .enumerate()
                .filter(|(i, _)| range.contains(&(i % 40)))
                .map(|(_, v)| v.clone())
                .collect(),
            y: all
                .y
                .iter()
                .enumerate()
                .filter(|(i, _)| range.contains(&(i % 40)))
                .map(|(_, &y)| y)
                .collect(),
        };
        let (train, val, test) = (pick(0..20), pick(20..30), pick(30..40));
        let report = probe_report(&train, &val, &test, 4, 3);
        let shots: Vec<Option<usize>> = report.rows.iter().map(|r| r.shots).collect();
        assert_eq!(
            shots,
            vec![Some(1), Some(2), Some(4), Some(8), Some(16), None]
        );
        assert_eq!(report.rows[2].train_size, 16);
        assert!(report.rows[2].test_accuracy > 0.5, "{:?}", report.rows);
        assert!(
            report.rows.last().unwrap().test_accuracy > 0.9,
            "{:?}",
            report.rows
        );
        assert!(L2_SWEEP.contains(&report.rows[0].l2));
        // Seeded: the same call gives the same table.
        assert_eq!(probe_report(&train, &val, &test, 4, 3).rows, report.rows);
    }
}
