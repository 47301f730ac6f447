//! PCA and k-means++ for keyframe selection (paper 000: features → PCA → k-means, the frame
//! nearest each centroid is a keyframe).
//!
//! Rules: deterministic (a fixed-seed SplitMix64, several restarts, the lowest inertia
//! wins, ties to the earlier restart); never more clusters than distinct points.

use nalgebra::{DMatrix, SymmetricEigen};

/// Principal-component scores of `points` (rows), keeping at most `dims` components with
/// non-negligible variance. Uses the n×n Gram matrix: windows hold far fewer frames than
/// the 768 feature dimensions.
pub fn pca(points: &[Vec<f32>], dims: usize) -> Vec<Vec<f32>> {
    let n = points.len();
    if n == 0 {
        return Vec::new();
    }
    let d = points[0].len();
    let mut mean = vec![0f64; d];
    for p in points {
        for (m, v) in mean.iter_mut().zip(p) {
            *m += *v as f64 / n as f64;
        }
    }
    let centred = DMatrix::from_fn(n, d, |i, j| points[i][j] as f64 - mean[j]);
    let gram = &centred * centred.transpose();
    let eigen = SymmetricEigen::new(gram);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        eigen.eigenvalues[b]
            .total_cmp(&eigen.eigenvalues[a])
            .then(a.cmp(&b))
    });
    let total: f64 = eigen.eigenvalues.iter().map(|v| v.max(0.0)).sum();
    let kept: Vec<usize> = order
        .into_iter()
        .filter(|&c| eigen.eigenvalues[c] > total.max(1e-12) * 1e-9)
        .take(dims.max(1))
        .collect();
    (0..n)
        .map(|i| {
            kept.iter()
                .map(|&c| {
                    // Eigenvectors have an arbitrary sign; fix it so results are reproducible.
                    let col = eigen.eigenvectors.column(c);
                    let sign = if col.iter().find(|v| v.abs() > 1e-12).copied().unwrap_or(1.0) < 0.0
                    {
                        -1.0
                    } else {
                        1.0
                    };
                    (sign * col[i] * eigen.eigenvalues[c].max(0.0).sqrt()) as f32
                })
                .collect()
        })
        .collect()
}

/// SplitMix64: a tiny, well-mixed generator, so selection does not depend on a crate's
/// choice of algorithm.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}

#[derive(Debug, Clone)]
pub struct Clustering {
    pub centroids: Vec<Vec<f32>>,
    /// Cluster of each point.
    pub assignment: Vec<usize>,
    pub inertia: f64,
}

/// k-means++ seeding then Lloyd iterations; `restarts` runs, the best kept. `k` is clamped
/// to the number of distinct points.
pub fn kmeans(points: &[Vec<f32>], k: usize, restarts: usize, seed: u64) -> Clustering {
    let n = points.len();
    let mut distinct: Vec<&Vec<f32>> = Vec::new();
    for p in points {
        if !distinct.iter().any(|q| dist2(p, q) == 0.0) {
            distinct.push(p);
        }
    }
    let k = k.min(distinct.len()).max(1).min(n.max(1));
    if n == 0 {
        return Clustering {
            centroids: Vec::new(),
            assignment: Vec::new(),
            inertia: 0.0,
        };
    }
    let mut rng = SplitMix64::new(seed);
    let mut best: Option<Clustering> = None;
    for _ in 0..restarts.max(1) {
        let run = lloyd(points, seed_plus_plus(points, k, &mut rng));
        if best.as_ref().is_none_or(|b| run.inertia < b.inertia - 1e-9) {
            best = Some(run);
        }
    }
    best.unwrap_or(Clustering {
        centroids: Vec::new(),
        assignment: vec![0; n],
        inertia: 0.0,
    })
}

fn seed_plus_plus(points: &[Vec<f32>], k: usize, rng: &mut SplitMix64) -> Vec<Vec<f32>> {
    let n = points.len();
    let mut centroids = vec![points[(rng.next_u64() % n as u64) as usize].clone()];
    let mut nearest: Vec<f64> = points.iter().map(|p| dist2(p, &centroids[0])).collect();
    while centroids.len() < k {
        let total: f64 = nearest.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut target = rng.next_f64() * total;
        let mut chosen = n - 1;
        for (i, d) in nearest.iter().enumerate() {
            if target < *d {
                chosen = i;
                break;
            }
            target -= d;
        }
        centroids.push(points[chosen].clone());
        for (i, p) in points.iter().enumerate() {
            nearest[i] = nearest[i].min(dist2(p, &centroids[centroids.len() - 1]));
        }
    }
    centroids
}

fn lloyd(points: &[Vec<f32>], mut centroids: Vec<Vec<f32>>) -> Clustering {
    let d = points[0].len();
    let mut assignment = vec![usize::MAX; points.len()];
    for _ in 0..100 {
        let mut changed = false;
        for (i, p) in points.iter().enumerate() {
            let c = nearest(p, &centroids);
            if assignment[i] != c {
                assignment[i] = c;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        for (c, centroid) in centroids.iter_mut().enumerate() {
            let members: Vec<&Vec<f32>> = points
                .iter()
                .zip(&assignment)
                .filter(|(_, a)| **a == c)
                .map(|(p, _)| p)
                .collect();
            // An empty cluster keeps its centroid: seeding picked distinct points, so this
            // only happens transiently.
            if !members.is_empty() {
                *centroid = (0..d)
                    .map(|j| {
                        members.iter().map(|m| m[j] as f64).sum::<f64>() as f32
                            / members.len() as f32
                    })
                    .collect();
            }
        }
    }
    let inertia = points
        .iter()
        .zip(&assignment)
        .map(|(p, &a)| dist2(p, &centroids[a]))
        .sum();
    Clustering {
        centroids,
        assignment,
        inertia,
    }
}

fn nearest(p: &[f32], centroids: &[Vec<f32>]) -> usize {
    let mut best = (0, f64::INFINITY);
    for (c, centroid) in centroids.iter().enumerate() {
        let d = dist2(p, centroid);
        if d < best.1 {
            best = (c, d);
        }
    }
    best.0
}

/// For each cluster, the index of the point nearest its centroid (earliest on ties), sorted.
pub fn medoids(points: &[Vec<f32>], clustering: &Clustering) -> Vec<usize> {
    let mut chosen: Vec<usize> = clustering
        .centroids
        .iter()
        .enumerate()
        .filter_map(|(c, centroid)| {
            points
                .iter()
                .enumerate()
                .filter(|(i, _)| clustering.assignment[*i] == c)
                .min_by(|(i, a), (j, b)| {
                    dist2(a, centroid)
                        .total_cmp(&dist2(b, centroid))
                        .then(i.cmp(j))
                })
                .map(|(i, _)| i)
        })
        .collect();
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(center: [f32; 2], n: usize, rng: &mut SplitMix64) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                vec![
                    center[0] + rng.next_f64() as f32 - 0.5,
                    center[1] + rng.next_f64() as f32 - 0.5,
                ]
            })
            .collect()
    }

    #[test]
    fn kmeans_finds_three_separated_blobs() {
        let mut rng = SplitMix64::new(7);
        let mut points = blob([0.0, 0.0], 10, &mut rng);
        points.extend(blob([20.0, 0.0], 10, &mut rng));
        points.extend(blob([0.0, 20.0], 10, &mut rng));
        let c = kmeans(&points, 3, 4, 1);
        assert_eq!(c.centroids.len(), 3);
        for block in c.assignment.chunks(10) {
            assert!(block.iter().all(|a| *a == block[0]), "{:?}", c.assignment);
        }
        let picked = medoids(&points, &c);
        assert_eq!(picked.len(), 3);
        assert_eq!(
            picked.iter().map(|i| i / 10).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        // Deterministic.
        assert_eq!(kmeans(&points, 3, 4, 1).assignment, c.assignment);
    }

    #[test]
    fn k_is_clamped_to_distinct_points() {
        let same = vec![vec![1.0, 2.0]; 6];
        let c = kmeans(&same, 4, 3, 0);
        assert_eq!(c.centroids.len(), 1);
        assert_eq!(medoids(&same, &c), vec![0]);
        let two = vec![vec![0.0], vec![5.0]];
        assert_eq!(kmeans(&two, 9, 3, 0).centroids.len(), 2);
        assert!(kmeans(&[], 3, 3, 0).centroids.is_empty());
    }

    #[test]
    fn pca_recovers_the_dominant_axis() {
        // Points along (3, 4)/5 with small noise on the orthogonal axis.
        let points: Vec<Vec<f32>> = (0..20)
            .map(|i| {
                let t = i as f32 - 10.0;
                let e = if i % 2 == 0 { 0.01 } else { -0.01 };
                vec![0.6 * t - 0.8 * e, 0.8 * t + 0.6 * e, 5.0]
            })
            .collect();
        let scores = pca(&points, 2);
        assert_eq!(scores[0].len(), 2);
        // First component's scores are the centred positions along the line (up to sign);
        // t runs from -10 to 9, so the mean is -0.5.
        for (i, s) in scores.iter().enumerate() {
            assert!(
                (s[0].abs() - (i as f32 - 9.5).abs()).abs() < 0.05,
                "{i}: {s:?}"
            );
        }
        // Variance on the second component is tiny.
        assert!(scores.iter().all(|s| s[1].abs() < 0.05));
        // Identical points have no variance: one zero-variance component is not kept.
        assert!(pca(&vec![vec![1.0, 1.0]; 4], 3)
            .iter()
            .all(|s| s.len() <= 1));
    }
}
