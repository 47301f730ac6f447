//! A graph pass: fuse each attention core (`softmax(Q·Kᵀ · scale + mask) · V`) into one op
//! that runs the heads in parallel.
//!
//! tract runs the two batched products of an attention block head after head on one thread
//! (each head's 50×64 by 64×50 product is far below the size where tract-linalg threads a
//! matmul), packs both operands of every head first, and runs the scale, the mask and the
//! softmax as further single-threaded passes. For a ViT-B/32 image that is about a fifth of
//! the int8 time at two threads, all of it on one core.
//!
//! Rules, and why:
//! - Heads (and batch items) are independent, so each `(item, head)` pair is one task on the
//!   encoder's thread pool: its scores, mask, softmax and weighted sum stay in cache, and the
//!   pool's threads share the work evenly (12 heads × batch for ViT-B/32, 8 for its text).
//! - The products read Q, K and V where they lie (`[batch, tokens, heads, width]`, as the
//!   exporters reshape them) through strides, so nothing is packed or transposed in the
//!   graph, and each head writes its rows of the output in place.
//! - The softmax uses tract-linalg's own max, exp-sum and scale kernels, the ones tract's
//!   Softmax op runs, so only the matmul's summation order differs from the unfused graph:
//!   outputs agree within float rounding (tested: cosine ≥ 0.999 999 on the fixture).
//! - Only the exact layout both exporters write is matched; anything else is left to tract.
//! - Stands for an upstream change: tract could thread batched matmuls over their batch
//!   axes when each product is too small to thread by itself.

use rayon::prelude::*;
use tract_linalg::routines::Func;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

use crate::disjoint::DisjointOut;
use crate::pattern::{binary_named, single_successor_inlet};

/// Where each axis of the fused op's output comes from.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum OutAxis {
    Batch,
    Tokens,
    Heads,
    Width,
    One,
}

/// `softmax(Q·Kᵀ · scale + mask) · V` for inputs `q, k, v[, mask]`, with Q `[batch?, T,
/// heads, d]`, K and V `[batch?, S, heads, d]`, and the mask broadcasting to
/// `[batch?, heads, T, S]`. The output's elements are ordered `[batch, T, heads, d]`.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct HeadAttention {
    /// The scale's bits (`f32::to_bits`), so the op can be hashed.
    scale_bits: Option<u32>,
    masked: bool,
    output: TVec<OutAxis>,
}

impl HeadAttention {
    fn output_shape<D: DimLike>(&self, q: &[D], v: &[D]) -> TVec<D> {
        let batched = q.len() == 4;
        let at = |ix: usize| if batched { ix + 1 } else { ix };
        self.output
            .iter()
            .map(|axis| match axis {
                OutAxis::Batch => q[0].clone(),
                OutAxis::Tokens => q[at(0)].clone(),
                OutAxis::Heads => q[at(1)].clone(),
                OutAxis::Width => v[at(2)].clone(),
                OutAxis::One => D::one(),
            })
            .collect()
    }
}

impl Op for HeadAttention {
    fn name(&self) -> StaticName {
        "HeadAttention".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale={:?} masked={}",
            self.scale_bits.map(f32::from_bits),
            self.masked
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

/// Sizes of one call, and the mask's strides over `[batch, heads, T, S]` (0 where it
/// broadcasts).
struct Dims {
    tokens: usize,
    keys: usize,
    heads: usize,
    width: usize,
    value_width: usize,
    mask_strides: [usize; 4],
}

impl EvalOp for HeadAttention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
        let batched = q.rank() == 4;
        let split = |t: &TValue| -> TractResult<(usize, usize, usize, usize)> {
            match (batched, t.shape()) {
                (false, &[n, h, d]) => Ok((1, n, h, d)),
                (true, &[b, n, h, d]) => Ok((b, n, h, d)),
                (_, other) => bail!("HeadAttention: input of shape {other:?}"),
            }
        };
        let (batch, tokens, heads, width) = split(q)?;
        let (kb, keys, kh, kw) = split(k)?;
        let (vb, vs, vh, value_width) = split(v)?;
        ensure!(
            (kb, kh, kw) == (batch, heads, width) && (vb, vs, vh) == (batch, keys, heads),
            "HeadAttention: q {:?}, k {:?}, v {:?} do not match",
            q.shape(),
            k.shape(),
            v.shape()
        );
        let mut mask_strides = [0usize; 4];
        if self.masked {
            let full = [batch, heads, tokens, keys];
            let shape = inputs[3].shape();
            ensure!(shape.len() <= 4, "HeadAttention: mask of shape {shape:?}");
            let mut stride = 1;
            for (ix, &dim) in shape.iter().enumerate().rev() {
                let logical = 4 - shape.len() + ix;
                if dim != 1 {
                    ensure!(
                        dim == full[logical],
                        "HeadAttention: mask of shape {shape:?} for scores {full:?}"
                    );
                    mask_strides[logical] = stride;
                }
                stride *= dim;
            }
        }
        let dims = Dims {
            tokens,
            keys,
            heads,
            width,
            value_width,
            mask_strides,
        };
        // SAFETY: every element is stored before anything reads it: each (item, head) pair's
        // weighted sum stores its `tokens × value_width` values, and the pairs cover the
        // output.
        let mut out =
            unsafe { Tensor::uninitialized::<f32>(&self.output_shape(q.shape(), v.shape()))? };
        let q = q.try_as_plain_ram()?;
        let k = k.try_as_plain_ram()?;
        let v = v.try_as_plain_ram()?;
        let mask = match self.masked {
            true => Some(inputs[3].try_as_plain_ram()?),
            false => None,
        };
        let (q, k, v) = (
            q.as_slice::<f32>()?,
            k.as_slice::<f32>()?,
            v.as_slice::<f32>()?,
        );
        let mask = mask.as_ref().map(|m| m.as_slice::<f32>()).transpose()?;
        let kernels = Kernels::new()?;
        let scale = self.scale_bits.map(f32::from_bits).unwrap_or(1.0);
        {
            let mut plain = out.try_as_plain_ram_mut()?;
            let rows = DisjointOut::new(plain.as_slice_mut::<f32>()?);
            let task = |pair: usize| {
                // SAFETY: `pair` < batch·heads, q, k, v and the output have the sizes checked
                // above, and each pair writes only its own item's rows in its own head's
                // columns, so no two tasks touch the same output element.
                unsafe { one_head(pair, &dims, q, k, v, mask, scale, &kernels, rows) }
            };
            // Only inside the encoder's pool: elsewhere rayon would start a global pool.
            if rayon::current_thread_index().is_some() && rayon::current_num_threads() > 1 {
                (0..batch * heads).into_par_iter().try_for_each(task)?;
            } else {
                (0..batch * heads).try_for_each(task)?;
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

struct Kernels {
    max: Box<dyn tract_linalg::reduce::Reduce<f32>>,
    exp_sum: Box<dyn tract_linalg::reduce::MapReduce<f32, f32>>,
    scale: Box<dyn tract_linalg::element_wise::ElementWise<f32, f32>>,
}

impl Kernels {
    fn new() -> TractResult<Kernels> {
        Ok(Kernels {
            max: Func::ReduceMax.reduce_f32()?,
            exp_sum: Func::Softmax2.map_reduce_f32()?,
            scale: Func::MulByScalar.ew_f32_param()?,
        })
    }
}

/// One `(item, head)` pair: scores, mask, softmax, weighted sum into the output rows.
///
/// # Safety
/// `pair < batch·heads`; `q` and `k`/`v` hold `[batch, tokens or keys, heads, width or
/// value_width]` values as `d` describes them, and `out` holds `[batch, tokens, heads,
/// value_width]` values; while it runs, nothing else touches this pair's elements of `out`
/// (its item's rows, its head's columns).
#[allow(clippy::too_many_arguments)]
unsafe fn one_head(
    pair: usize,
    d: &Dims,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
    scale: f32,
    kernels: &Kernels,
    out: DisjointOut,
) -> TractResult<()> {
    let (item, head) = (pair / d.heads, pair % d.heads);
    // Every row starts on a 64-byte boundary: tract-linalg's reductions treat an unaligned
    // head and tail apart, so the same row at another address would sum in another order,
    // and results would depend on which thread's allocation the scores landed in.
    let stride = d.keys.next_multiple_of(16);
    let mut scores = Tensor::zero_aligned::<f32>(&[d.tokens, stride], 64)?;
    let mut scores = scores.try_as_plain_ram_mut()?;
    let scores = scores.as_slice_mut::<f32>()?;
    let row = (d.heads * d.width) as isize;
    let value_row = (d.heads * d.value_width) as isize;
    // SAFETY: this pair's Q is `tokens` rows of `width` values, `row` apart, from
    // (item·tokens·heads + head)·width, and its K (read transposed) `keys` rows likewise: both
    // within q and k by the caller's contract. `scores` holds tokens rows of `stride ≥ keys`
    // values. With β = 0 sgemm only writes `scores`.
    unsafe {
        // scores[t, s] = scale · Σ_c q[item, t, head, c] · k[item, s, head, c]
        matrixmultiply::sgemm(
            d.tokens,
            d.width,
            d.keys,
            scale,
            q.as_ptr().add((item * d.tokens * d.heads + head) * d.width),
            row,
            1,
            k.as_ptr().add((item * d.keys * d.heads + head) * d.width),
            1,
            row,
            0.0,
            scores.as_mut_ptr(),
            stride as isize,
            1,
        );
    }
    for (t, scores) in scores.chunks_exact_mut(stride).enumerate() {
        let scores = &mut scores[..d.keys];
        if let Some(mask) = mask {
            let [sb, sh, st, ss] = d.mask_strides;
            let base = item * sb + head * sh + t * st;
            for (s, x) in scores.iter_mut().enumerate() {
                *x += mask[base + s * ss];
            }
        }
        let max = kernels.max.run(scores)?;
        let sum = kernels.exp_sum.run_with_params(scores, max)?;
        kernels.scale.run_with_params(scores, sum.recip())?;
    }
    // SAFETY: `scores` is read as tokens × keys within its tokens × stride values; this pair's
    // V is `keys` rows of `value_width` values, `value_row` apart, within v; its output is
    // `tokens` rows of `value_width` values, `value_row` apart, from
    // (item·tokens·heads + head)·value_width, within `out` and, by the caller's contract,
    // touched by no one else. With β = 0 sgemm writes the output without reading it.
    unsafe {
        // out[item, t, head, c] = Σ_s scores[t, s] · v[item, s, head, c]
        matrixmultiply::sgemm(
            d.tokens,
            d.keys,
            d.value_width,
            1.0,
            scores.as_ptr(),
            stride as isize,
            1,
            v.as_ptr()
                .add((item * d.keys * d.heads + head) * d.value_width),
            value_row,
            1,
            0.0,
            out.as_mut_ptr()
                .add((item * d.tokens * d.heads + head) * d.value_width),
            value_row,
            1,
        );
    }
    Ok(())
}

impl TypedOp for HeadAttention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&*self.output_shape(
            &inputs[0].shape.to_tvec(),
            &inputs[2].shape.to_tvec()
        ))))
    }

    as_op!();
}

/// An einsum's axis letters, per input and for the output.
fn letters(op: &EinSum) -> (Vec<Vec<char>>, Vec<char>) {
    let (inputs, outputs) = op.axes.to_strs();
    (
        inputs.iter().map(|s| s.chars().collect()).collect(),
        outputs[0].chars().collect(),
    )
}

fn all_distinct(letters: &[char]) -> bool {
    letters
        .iter()
        .enumerate()
        .all(|(ix, c)| !letters[..ix].contains(c))
}

/// `[a?] m h d, [a?] n h d -> [a?] h m n`: the scores product, as both exporters write it.
fn is_scores_product(model: &TypedModel, node: &TypedNode) -> bool {
    let Some(op) = node.op_as::<EinSum>() else {
        return false;
    };
    if op.q_params.is_some() || op.operating_dt != DatumType::F32 || node.inputs.len() != 2 {
        return false;
    }
    let (ins, out) = letters(op);
    let r = out.len();
    if !(r == 3 || r == 4) || ins[0].len() != r || ins[1].len() != r {
        return false;
    }
    let (q, k) = (&ins[0], &ins[1]);
    let lead = r - 3;
    let (m, h, d, n) = (q[lead], q[lead + 1], q[lead + 2], k[lead]);
    let expected_k = [n, h, d];
    let expected_out = [h, m, n];
    let batch_ok = lead == 0 || (q[0] == k[0] && q[0] == out[0]);
    batch_ok
        && k[lead..] == expected_k
        && out[lead..] == expected_out
        && all_distinct(q)
        && all_distinct(&[m, h, d, n])
        && model.outlet_fact(node.inputs[0]).is_ok()
}

/// `[a?] h m n, [a?] n h d -> … m h d` (size-one axes anywhere in the output): the weighted
/// sum. Returns the output's axes, or `None`.
fn weighted_sum_axes(model: &TypedModel, node: &TypedNode) -> Option<TVec<OutAxis>> {
    let op = node.op_as::<EinSum>()?;
    if op.q_params.is_some() || op.operating_dt != DatumType::F32 || node.inputs.len() != 2 {
        return None;
    }
    let (ins, out) = letters(op);
    let (p, v) = (&ins[0], &ins[1]);
    let r = p.len();
    if !(r == 3 || r == 4) || v.len() != r || !all_distinct(p) || !all_distinct(&out) {
        return None;
    }
    let lead = r - 3;
    let (h, m, n, d) = (p[lead], p[lead + 1], p[lead + 2], v[lead + 2]);
    if v[lead..] != [n, h, d] || (lead == 1 && v[0] != p[0]) || !all_distinct(&[h, m, n, d]) {
        return None;
    }
    let shape = &model.outlet_fact(OutletId::new(node.id, 0)).ok()?.shape;
    let mut axes = tvec![];
    for (ix, c) in out.iter().enumerate() {
        axes.push(match *c {
            c if lead == 1 && c == p[0] => OutAxis::Batch,
            c if c == m => OutAxis::Tokens,
            c if c == h => OutAxis::Heads,
            c if c == d => OutAxis::Width,
            c if c == n => return None,
            _ if shape[ix].is_one() => OutAxis::One,
            _ => return None,
        });
    }
    let order: Vec<OutAxis> = axes
        .iter()
        .copied()
        .filter(|a| *a != OutAxis::One)
        .collect();
    let expected: &[OutAxis] = if lead == 1 {
        &[
            OutAxis::Batch,
            OutAxis::Tokens,
            OutAxis::Heads,
            OutAxis::Width,
        ]
    } else {
        &[OutAxis::Tokens, OutAxis::Heads, OutAxis::Width]
    };
    (order == expected).then_some(axes)
}

/// What the pass found around one softmax.
struct Found {
    q: OutletId,
    k: OutletId,
    v: OutletId,
    mask: Option<OutletId>,
    scale: Option<f32>,
    output: TVec<OutAxis>,
    last: usize,
}

fn find(model: &TypedModel, softmax_node: usize) -> Option<Found> {
    let node = model.node(softmax_node);
    let softmax = node.op_as::<Softmax>()?;
    let scores_fact = model.outlet_fact(node.inputs[0]).ok()?;
    let rank = scores_fact.rank();
    if softmax.kind != SoftmaxKind::Softmax
        || softmax.quant_output_dt.is_some()
        || softmax.axes.as_slice() != [rank - 1]
        || scores_fact.datum_type != DatumType::F32
    {
        return None;
    }
    // Backwards from the softmax: an optional mask, an optional scale, the scores product.
    let mut at = node.inputs[0].node;
    let mut mask = None;
    if let Some(add) = binary_named(model, at, "Add") {
        let (scores, other) = (add.inputs[0], add.inputs[1]);
        let (scores, other) = if model.node(scores.node).op_is::<EinSum>()
            || binary_named(model, scores.node, "Mul").is_some()
        {
            (scores, other)
        } else {
            (other, scores)
        };
        let mask_fact = model.outlet_fact(other).ok()?;
        let scores_shape = &scores_fact.shape;
        if mask_fact.datum_type != DatumType::F32
            || mask_fact.rank() > rank
            || single_successor_inlet(model, scores.node)?.node != at
        {
            return None;
        }
        let offset = rank - mask_fact.rank();
        for (ix, dim) in mask_fact.shape.iter().enumerate() {
            if !dim.is_one() && *dim != scores_shape[offset + ix] {
                return None;
            }
        }
        mask = Some(other);
        at = scores.node;
    }
    let mut scale = None;
    if let Some(mul) = binary_named(model, at, "Mul") {
        let konst = |o: OutletId| {
            model
                .outlet_fact(o)
                .ok()?
                .konst
                .clone()
                .filter(|k| k.len() == 1 && k.datum_type() == DatumType::F32)
        };
        let (scores, factor) = match (konst(mul.inputs[0]), konst(mul.inputs[1])) {
            (None, Some(f)) => (mul.inputs[0], f),
            (Some(f), None) => (mul.inputs[1], f),
            _ => return None,
        };
        if single_successor_inlet(model, scores.node)?.node != at {
            return None;
        }
        scale = Some(factor.cast_to_scalar::<f32>().ok()?);
        at = scores.node;
    }
    let scores = model.node(at);
    if !is_scores_product(model, scores) {
        return None;
    }
    if mask.is_none() && scale.is_none() && single_successor_inlet(model, at)?.node != softmax_node
    {
        return None;
    }
    // Forwards: the softmax feeds only the weighted sum, as its first input.
    let next = single_successor_inlet(model, softmax_node)?;
    let sum = model.node(next.node);
    if next.slot != 0 {
        return None;
    }
    let output = weighted_sum_axes(model, sum)?;
    // The width of the scores product is the width of each head of Q and K.
    let (q, k, v) = (scores.inputs[0], scores.inputs[1], sum.inputs[1]);
    let (qf, kf, vf) = (
        model.outlet_fact(q).ok()?,
        model.outlet_fact(k).ok()?,
        model.outlet_fact(v).ok()?,
    );
    if [qf, kf, vf]
        .iter()
        .any(|f| f.datum_type != DatumType::F32 || f.rank() != rank)
    {
        return None;
    }
    Some(Found {
        q,
        k,
        v,
        mask,
        scale,
        output,
        last: sum.id,
    })
}

/// Fuses every matching attention core of a decluttered typed model; returns how many.
pub fn fuse_attention(model: &mut TypedModel) -> TractResult<usize> {
    let softmaxes: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<Softmax>())
        .map(|n| n.id)
        .collect();
    let mut fused = 0;
    for id in softmaxes {
        let Some(found) = find(model, id) else {
            continue;
        };
        let name = model.node(found.last).name.clone();
        let mut patch = TypedModelPatch::new(format!("fuse attention {name}"));
        let mut outlets = vec![found.q, found.k, found.v];
        outlets.extend(found.mask);
        let inputs = outlets
            .iter()
            .map(|o| patch.tap_model(model, *o))
            .collect::<TractResult<TVec<_>>>()?;
        let op = HeadAttention {
            scale_bits: found.scale.map(f32::to_bits),
            masked: found.mask.is_some(),
            output: found.output,
        };
        let wire = patch.wire_node(format!("{name}.attention"), op, &inputs)?[0];
        patch.shunt_outside(model, OutletId::new(found.last, 0), wire)?;
        patch.apply(model)?;
        fused += 1;
    }
    if fused > 0 {
        model.compact()?;
    }
    Ok(fused)
}

#[cfg(test)]
mod fixture_tests {
    use super::*;
    use crate::test_support::{agreement, decluttered, inputs, run};

    /// The pass on the fixture's real exports (vision, and text with its causal mask), at
    /// batch 1 and 2, run on one thread and in a two-thread pool: every attention block is
    /// fused, and the embeddings agree with tract's own graph (cosine ≥ 0.999 999, |Δ| ≤ 1e-5
    /// for fp32; the int8 files re-quantize each layer's input, where a rounding difference
    /// can move a value by one step, so ≥ 0.9999 there).
    #[test]
    fn fused_attention_keeps_the_embeddings() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for batch in [1, 2] {
            let (pixels, ids) = inputs(batch);
            for (file, input, min_cosine, max_diff) in [
                ("vision_model.onnx", &pixels, 0.999_999, 1e-5),
                ("text_model.onnx", &ids, 0.999_999, 1e-5),
                (
                    "vision_model_quantized.onnx",
                    &pixels,
                    0.9999,
                    f32::INFINITY,
                ),
                ("text_model_quantized.onnx", &ids, 0.9999, f32::INFINITY),
            ] {
                let model = decluttered(file, input);
                let softmaxes = model
                    .nodes()
                    .iter()
                    .filter(|n| n.op_is::<Softmax>())
                    .count();
                let mut fused_model = model.clone();
                let fused = fuse_attention(&mut fused_model).unwrap();
                assert!(fused >= 2, "{file}: {fused} attention blocks fused");
                assert_eq!(fused, softmaxes, "{file}: some attention blocks were left");
                let want = run(model, input);
                let alone = run(fused_model.clone(), input);
                let shared = pool.install(|| run(fused_model, input));
                assert_eq!(alone, shared, "{file}: one thread and two differ");
                let (cosine, diff) = agreement(&want[0], &alone[0]);
                assert!(
                    cosine >= min_cosine && diff <= max_diff,
                    "{file} batch {batch}: cosine {cosine}, max |Δ| {diff}"
                );
            }
        }
    }
}
