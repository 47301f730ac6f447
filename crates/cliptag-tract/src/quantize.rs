//! A graph pass: swap tract's `DynamicQuantizeLinearU8` for the same arithmetic written so
//! the compiler vectorises it on a generic x86-64 or aarch64 target.
//!
//! Rules, and why:
//! - int8 exports from onnxruntime's `quantize_dynamic` quantize every activation before
//!   each integer matmul (50 times per ViT-B/32 image). tract's op walks the tensor twice
//!   with per-element branches and `f32::round_ties_even`, which without SSE4.1 is a libm
//!   call per value: a scalar loop in the middle of the hot path.
//! - The result is bit-identical to tract's (and ONNX's): `x / scale` (not a multiplication
//!   by the reciprocal, which moves some values across a rounding boundary), round half to
//!   even, plus the zero point, clamped to 0..=255. Round half to even uses the
//!   add-and-subtract 1.5·2²³ trick, exact for |v| < 2²², and here |x / scale| ≤ 255.
//! - Stands for an upstream change in tract-onnx's `ops/quant.rs`.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use crate::simd::with_avx2;

/// 1.5 · 2²³: adding then subtracting it rounds an f32 below 2²² to the nearest integer,
/// ties to even, under the default rounding mode.
const ROUND_MAGIC: f32 = 12_582_912.0;
const ROUND_MAGIC_BITS: i32 = 0x4B40_0000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, Default)]
pub struct VectorDynamicQuantizeLinearU8;

with_avx2! {
/// The range of `xs` widened to include zero, as ONNX's DynamicQuantizeLinear wants it.
fn min_max_with_zero(xs: &[f32]) -> (f32, f32) {
    let mut mins = [0f32; 8];
    let mut maxs = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for chunk in &mut chunks {
        for i in 0..8 {
            mins[i] = mins[i].min(chunk[i]);
            maxs[i] = maxs[i].max(chunk[i]);
        }
    }
    let (mut min, mut max) = (0f32, 0f32);
    for &x in chunks.remainder().iter().chain(&mins) {
        min = min.min(x);
    }
    for &x in chunks.remainder().iter().chain(&maxs) {
        max = max.max(x);
    }
    (min, max)
}
}

/// Scale and zero point exactly as tract-onnx (and onnxruntime) derive them.
fn scale_and_zero_point(min: f32, max: f32) -> (f32, u8) {
    let scale = (max - min) / u8::MAX as f32;
    let zero_point = (-min / scale).round_ties_even().clamp(0.0, 255.0);
    (scale, zero_point as u8)
}

with_avx2! {
fn quantize(xs: &[f32], scale: f32, zero_point: u8, ys: &mut [u8]) {
    if scale == 0.0 {
        // All zeros: 0 / 0 is NaN, which ONNX's arithmetic sends to the zero point.
        ys.fill(zero_point);
        return;
    }
    let zp = zero_point as i32;
    for (x, y) in xs.iter().zip(ys.iter_mut()) {
        // After adding 1.5·2²³ the integer sits in the low mantissa bits: reading it from
        // the bit pattern keeps the loop free of float-to-int conversions, whose saturating
        // semantics the compiler would otherwise emit lane by lane.
        let rounded = (x / scale + ROUND_MAGIC).to_bits() as i32 - ROUND_MAGIC_BITS;
        *y = (rounded + zp).clamp(0, 255) as u8;
    }
}
}

impl Op for VectorDynamicQuantizeLinearU8 {
    fn name(&self) -> StaticName {
        "VectorDynamicQuantizeLinearU8".into()
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    op_as_typed_op!();
}

impl EvalOp for VectorDynamicQuantizeLinearU8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs[0].cast_to::<f32>()?;
        let xs = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let (min, max) = min_max_with_zero(xs);
        let (scale, zero_point) = scale_and_zero_point(min, max);
        // SAFETY: `quantize` stores every element (one per input value) before it is read.
        let mut out = unsafe { Tensor::uninitialized_dt(u8::datum_type(), input.shape())? };
        quantize(
            xs,
            scale,
            zero_point,
            out.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?,
        );
        Ok(tvec!(
            out.into_tvalue(),
            tensor0(scale).into_tvalue(),
            tensor0(zero_point).into_tvalue()
        ))
    }
}

impl TypedOp for VectorDynamicQuantizeLinearU8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut quantized = inputs[0].clone();
        quantized.datum_type = u8::datum_type();
        quantized.konst = None;
        Ok(tvec!(quantized, f32::fact([0; 0]), u8::fact([0; 0])))
    }

    as_op!();
}

/// Replace every `DynamicQuantizeLinearU8` node; returns how many.
pub fn vectorise_dynamic_quantize(model: &mut TypedModel) -> TractResult<usize> {
    let targets: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op.name() == "DynamicQuantizeLinearU8")
        .map(|n| n.id)
        .collect();
    for &id in &targets {
        let node = model.node(id);
        let patch = TypedModelPatch::replace_single_op(
            model,
            node,
            &node.inputs,
            VectorDynamicQuantizeLinearU8,
        )?;
        patch.apply(model)?;
    }
    if !targets.is_empty() {
        model.compact()?;
    }
    Ok(targets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tract-onnx's own arithmetic, written plainly, as the reference.
    fn reference(xs: &[f32]) -> (Vec<u8>, f32, u8) {
        let (min, max) = xs.iter().fold((0f32, 0f32), |(lo, hi), &x| {
            (if x < lo { x } else { lo }, if x > hi { x } else { hi })
        });
        let scale = (max - min) / 255.0;
        let zp = (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        let ys = xs
            .iter()
            .map(|x| (((x / scale).round_ties_even() as i32) + zp as i32).clamp(0, 255) as u8)
            .collect();
        (ys, scale, zp)
    }

    fn ours(xs: &[f32]) -> (Vec<u8>, f32, u8) {
        let t = Tensor::from_shape(&[xs.len()], xs).unwrap();
        let out = VectorDynamicQuantizeLinearU8
            .eval(&EvalContext::out_of_plan(), tvec!(t.into_tvalue()))
            .unwrap();
        let plain = |i: usize| out[i].try_as_plain_ram().unwrap();
        (
            plain(0).as_slice::<u8>().unwrap().to_vec(),
            *plain(1).to_scalar::<f32>().unwrap(),
            *plain(2).to_scalar::<u8>().unwrap(),
        )
    }

    #[test]
    fn bit_identical_to_the_plain_arithmetic() {
        let mut bits = crate::test_support::random_bits();
        let mut next = || (bits() >> 40) as f32 / (1u64 << 24) as f32;
        for (len, lo, hi) in [
            (1, -1.0, 1.0),
            (37, 0.5, 3.0),
            (38_400, -7.0, 2.5),
            (4099, -3.0, -0.1),
        ] {
            let xs: Vec<f32> = (0..len).map(|_| lo + (hi - lo) * next()).collect();
            assert_eq!(ours(&xs), reference(&xs), "len {len}");
        }
        // Ties land exactly on .5 after the division; they must go to even.
        let xs = [0.0, 255.0, 0.5, 1.5, 2.5, 254.5];
        assert_eq!(ours(&xs), reference(&xs));
        // All zeros: scale 0, 0/0 is NaN, which both map to the zero point.
        assert_eq!(ours(&[0.0; 9]), reference(&[0.0; 9]));
    }
}
