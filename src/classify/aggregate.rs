//! How a window's keyframe embeddings become the window's embedding.

use crate::clip::l2_normalized;
use crate::keyframes::Aggregation;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_embedding_is_unit_norm() {
        let m = mean_embedding([[3.0f32, 0.0].as_slice(), [0.0, 0.5].as_slice()]).unwrap();
        assert!((m[0] - m[1]).abs() < 1e-6);
        assert!((m.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
