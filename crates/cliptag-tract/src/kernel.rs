//! What the fused linear ops share about tract-linalg's matrix-product kernels: the kernel
//! and packing a layer runs with, the timing loop that picks one, and how wide a column
//! block is.
//!
//! Rules, and why:
//! - Kernels are chosen by measuring them on the layer's shape, not by tract's reasoning
//!   from the instruction set (which on some cores keeps to tiles that lose 10–30 %); each
//!   op decides which candidates to time and for how long, and both time them with
//!   [`best_run`], so their measurements are comparable.
//! - A column block is a whole number of kernel panels and one task for the encoder's pool.

use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul};
use tract_onnx::prelude::*;

/// A kernel and the index of the packing it is used with.
pub(crate) type Choice = (Box<dyn MatMatMul>, usize);

/// The best of `runs` products `a·b` by `choice`, stored row-major into `c` (`m × n`, 4-byte
/// values).
///
/// # Safety
/// `a` and `b` were packed by `choice`'s packing (its A and B formats) over the same depth,
/// `a` for `c`'s `m` rows and `b` for its `n` columns, and `c` is a plain `m × n` tensor of
/// 4-byte values: the kernel reads and writes through them without checking.
pub(crate) unsafe fn best_run(
    (kernel, packing): &Choice,
    (a, b): (&dyn MMMInputValue, &dyn MMMInputValue),
    mut c: Tensor,
    runs: usize,
) -> TractResult<std::time::Duration> {
    let (m, n) = (c.shape()[0], c.shape()[1]);
    let mut best = std::time::Duration::MAX;
    for _ in 0..runs {
        let start = std::time::Instant::now();
        // SAFETY: the caller's contract bounds the kernel's reads; the store is `c`'s own
        // row-major layout (row stride `n`, column stride 1, 4-byte values), so it writes
        // within `c`.
        unsafe {
            let store = kernel
                .c_from_data_and_strides(4, n as isize, 1)
                .wrap(&c.view_mut());
            kernel.run(
                m,
                n,
                &[
                    FusedSpec::AddMatMul {
                        a: AsInputValue::Borrowed(a),
                        b: AsInputValue::Borrowed(b),
                        packing: *packing,
                    },
                    FusedSpec::Store(store),
                ],
            )?;
        }
        best = best.min(start.elapsed());
    }
    Ok(best)
}

/// Columns per block: a few blocks per thread for an even share (8 blocks for the narrow
/// layers, 128 columns each for the wide ones), whole kernel panels, and few enough that
/// each block still runs a kernel-sized product.
pub(crate) fn block_width(n: usize, panel: usize) -> usize {
    let width = n.div_ceil(8).clamp(64, 128);
    width.next_multiple_of(panel.max(1))
}
