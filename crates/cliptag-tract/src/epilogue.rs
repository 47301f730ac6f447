//! Element-wise steps that both fused linear ops (int8 and fp32) run on a column block of
//! their output while it is in cache, instead of as separate passes over the whole tensor.
//!
//! Rules, and why:
//! - Each step does the same float operations, in the same order and with the same tract
//!   kernels, as the unfused graph's ops, so fusing it changes no value.
//! - Steps write through [`DisjointOut`]: the pool's tasks each own a block of columns, and
//!   a step's contract is that no other task touches that block while it runs.

use tract_linalg::element_wise::ElementWise;
use tract_onnx::prelude::*;

use crate::disjoint::DisjointOut;

/// `y·sigmoid(α·y)` over one column block, with the steps and the sigmoid kernel of tract's
/// unfused `Mul → Sigmoid → Mul`, so the values are the same.
///
/// # Safety
/// While it runs, nothing else reads or writes `columns` of `out`'s first `m` rows (rows of
/// `n` values).
pub(crate) unsafe fn quick_gelu(
    out: DisjointOut,
    n: usize,
    columns: std::ops::Range<usize>,
    m: usize,
    alpha: f32,
    sigmoid: &dyn ElementWise<f32>,
) -> TractResult<()> {
    let width = columns.len();
    // SAFETY: the caller's contract: no one else touches these columns of these rows.
    let row = |r: usize| unsafe { out.slice_mut(r * n + columns.start, width) };
    let mut gate = Vec::with_capacity(m * width);
    for r in 0..m {
        gate.extend(row(r).iter().map(|y| y * alpha));
    }
    sigmoid.run(&mut gate)?;
    for (r, gate) in gate.chunks_exact(width).enumerate() {
        for (y, g) in row(r).iter_mut().zip(gate) {
            *y *= g;
        }
    }
    Ok(())
}
