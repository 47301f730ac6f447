//! Embedding vectors: unit length, and the cosine between two of them.
//!
//! Sums run in [`LANES`] independent partial sums: a plain `iter().sum()` of floats is one
//! chain of dependent additions the compiler may not reorder (float addition is not
//! associative), which made a 512-dimension dot product ~4× slower than the same sum in
//! SIMD lanes and was most of a backfill's time (a window against 20 labels).

/// Partial sums in [`dot`]: four SSE or two AVX registers' worth.
const LANES: usize = 16;

/// The dot product of two vectors of the same length (the shorter's length otherwise).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0f32; LANES];
    let (chunks_a, chunks_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in chunks_a.zip(chunks_b) {
        for i in 0..LANES {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

pub fn l2_normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = dot(&v, &v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let na = dot(a, a).sqrt();
    let nb = dot(b, b).sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot(a, b) / (na * nb)
    }
}
