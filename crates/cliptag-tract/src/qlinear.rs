//! A graph pass: fuse each dynamically quantized linear layer of an int8 export into one op
//! that runs tract-linalg's integer kernel once, with the weights packed at load.
//!
//! onnxruntime's `quantize_dynamic` writes every linear layer as
//! `MatMulInteger(q, W, a_zp, w_zp) → Cast → Mul(a_scale · w_scale) → Add(bias)`. tract runs
//! that as an integer matmul followed by zero-point corrections (an activation row sum, a
//! rank-one product, subtractions) and then the cast, scale and bias, each a full pass over a
//! `[tokens, width]` tensor on one thread: more time than the matmul itself.
//!
//! Rules, and why:
//! - The arithmetic is the same exact integer sum, `Σ(a − a_zp)(w − w_zp)`, followed by the
//!   same float steps in the same order (`acc as f32 · (w_scale · a_scale) + bias`), so the
//!   output matches the unfused graph bit for bit. The kernel multiplies `i8 × i8`, so both
//!   sides move by 128 (`u8 ^ 0x80`) and the corrections absorb the shift:
//!   `Σ(a′ − za′)(w′ − zw′) = Σa′w′ − zw′·Σa′ − za′·(Σw′ − K·zw′)` with `a′ = a − 128` etc.
//! - Weights are packed once, when the encoder's graph is typed at load with a symbolic
//!   batch; every batch size's plan derives from that graph and shares them.
//! - The kernel is one of tract-linalg's for this CPU, found at run time (AVX-512 VNNI, AVX2,
//!   NEON dot product, …) and picked by timing it on the layer's shape, so a generic x86-64
//!   or aarch64 build gets the fast one.
//! - Leading axes are flattened: a `[batch, tokens, K]` input is one `[batch·tokens, K]`
//!   matmul, not `batch` small ones.
//! - Anything that does not match the pattern exactly is left to tract.
//! - Stands for an upstream change: tract could fuse the zero-point corrections, cast and
//!   per-column scale into the matmul's epilogue itself.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rayon::prelude::*;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul, MmmDispatch, Query};
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_linalg::routines::Func;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::einsum::EinSum;

use crate::disjoint::DisjointOut;
use crate::epilogue::quick_gelu;
use crate::kernel::{best_run, block_width, Choice};
use crate::pattern::{binary_named, find_quick_gelu, konst, other_input, single_successor};
use crate::simd::with_avx2;

/// One layer's weights, packed for the kernel, with the per-column constants of the
/// zero-point correction.
#[derive(Debug)]
pub struct PackedLinear {
    kernel: Box<dyn MatMatMul>,
    packing: usize,
    /// Column blocks, each packed alone: one block's product and epilogue are one task for
    /// the thread pool.
    blocks: Vec<Block>,
    /// The widths of the layer's outputs: one, or several for layers that read the same
    /// input and were merged (attention's Q, K and V).
    splits: TVec<usize>,
    /// The reduction length, before padding to the packing's alignment.
    k: usize,
    k_padded: usize,
    n: usize,
    /// `−zw′` per output column.
    neg_weight_zero: Vec<i32>,
    /// `K·zw′ − Σ_k w′` per output column; times `za′` at run time.
    column_term: Vec<i32>,
    weight_scale: Vec<f32>,
    bias: Option<Vec<f32>>,
    fingerprint: u64,
}

#[derive(Clone, Debug)]
pub struct QuantizedLinear {
    layer: Arc<PackedLinear>,
    /// Activation axes of size one that the matmul drops from its output.
    dropped_axes: TVec<usize>,
    /// `x·sigmoid(α·x)` applied to the output (CLIP's QuickGELU, α = 1.702), as `α`'s bits.
    quick_gelu: Option<u32>,
}

/// One column block of a layer's weights.
#[derive(Debug)]
struct Block {
    weights: Box<dyn MMMInputValue>,
    /// Which output the block belongs to, and its columns there.
    output: usize,
    first: usize,
    width: usize,
    /// Its first column among the layer's concatenated columns.
    layer_first: usize,
}

impl QuantizedLinear {
    fn output_shapes<D: Clone + From<usize>>(&self, input: &[D]) -> TVec<TVec<D>> {
        self.layer
            .splits
            .iter()
            .map(|width| output_shape(input, &self.dropped_axes, *width))
            .collect()
    }
}

/// The input's shape without the dropped axes, its last axis (K) replaced by N.
fn output_shape<D: Clone + From<usize>>(input: &[D], dropped_axes: &[usize], n: usize) -> TVec<D> {
    let mut shape: TVec<D> = input[..input.len() - 1]
        .iter()
        .enumerate()
        .filter(|(ix, _)| !dropped_axes.contains(ix))
        .map(|(_, d)| d.clone())
        .collect();
    shape.push(n.into());
    shape
}

impl Hash for QuantizedLinear {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.layer.fingerprint.hash(state);
        self.dropped_axes.hash(state);
        self.quick_gelu.hash(state);
    }
}

impl PartialEq for QuantizedLinear {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.layer, &other.layer)
            && self.dropped_axes == other.dropped_axes
            && self.quick_gelu == other.quick_gelu
    }
}
impl Eq for QuantizedLinear {}

impl Op for QuantizedLinear {
    fn name(&self) -> StaticName {
        "QuantizedLinear".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "k={} n={} kernel={} quick_gelu={:?}",
            self.layer.k,
            self.layer.n,
            self.layer.kernel.name(),
            self.quick_gelu.map(f32::from_bits)
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Accurate
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizedLinear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let layer = &*self.layer;
        let k = layer.k;
        let scale = *inputs[1].try_as_plain_ram()?.to_scalar::<f32>()?;
        let zero = inputs[2].cast_to_scalar::<i32>()?;
        let (bytes, flip) = int8_bytes(&inputs[0])?;
        let zero_shifted = zero - if flip == 0 { 0 } else { 128 };
        let m = bytes.len() / k;
        let parallel = rayon::current_thread_index().is_some() && rayon::current_num_threads() > 1;
        // Many rows (a batch of items) are cut into bands, each shifted and packed by its own
        // task, so that work is shared too; a band is a task's rows for every column block.
        let band_rows = if parallel && m >= 128 {
            m.div_ceil(rayon::current_num_threads())
                .next_multiple_of(layer.kernel.mr())
        } else {
            m
        };
        let (a_format, _) = &layer.kernel.packings()[layer.packing];
        let band = |first: usize| -> TractResult<Band> {
            let rows = band_rows.min(m - first);
            let (shifted, row_sums) = shift_rows(
                &bytes[first * k..(first + rows) * k],
                k,
                layer.k_padded,
                flip,
            );
            let a = Tensor::from_shape(&[rows, layer.k_padded], &shifted)?;
            Ok(Band {
                first,
                rows,
                packed: a_format.prepare_one(&a, 1, 0)?,
                row_sums,
            })
        };
        let starts: Vec<usize> = (0..m).step_by(band_rows.max(1)).collect();
        let bands: Vec<Band> = if parallel && starts.len() > 1 {
            starts
                .into_par_iter()
                .map(band)
                .collect::<TractResult<_>>()?
        } else {
            starts.into_iter().map(band).collect::<TractResult<_>>()?
        };
        let column_scale: Vec<f32> = layer.weight_scale.iter().map(|w| w * scale).collect();
        let column_term: Vec<i32> = layer
            .column_term
            .iter()
            .map(|c| c.wrapping_mul(zero_shifted))
            .collect();
        let sigmoid = match self.quick_gelu {
            Some(_) => Some(Func::Sigmoid.ew_f32()?),
            None => None,
        };
        let mut outputs = self
            .output_shapes(inputs[0].shape())
            .iter()
            // SAFETY: every element is stored before anything reads it: the bands cover rows
            // 0..m, each output's blocks cover its columns side by side (`pack`), and the
            // epilogue stores every element of its band's rows in its block's columns.
            .map(|shape| unsafe { Tensor::uninitialized::<f32>(shape) })
            .collect::<TractResult<TVec<_>>>()?;
        // Vecs, not TVecs: their drop may outlive the borrow of `outputs` (`#[may_dangle]`).
        let mut plains = outputs
            .iter_mut()
            .map(|out| out.try_as_plain_ram_mut())
            .collect::<TractResult<Vec<_>>>()?;
        let mut rows = vec![];
        for (plain, width) in plains.iter_mut().zip(&layer.splits) {
            let ys = plain.as_slice_mut::<f32>()?;
            ensure!(
                ys.len() == m * width,
                "QuantizedLinear: output of {} values, expected {m}×{width}",
                ys.len()
            );
            rows.push(DisjointOut::new(ys));
        }
        let task = |(band, block): (&Band, &Block)| -> TractResult<()> {
            let (width, n) = (block.width, layer.splits[block.output]);
            let m = band.rows;
            let rows = rows[block.output].tail(band.first * n);
            // SAFETY: the kernel's store below writes every element before it is read.
            let mut acc = unsafe { Tensor::uninitialized::<i32>(&[m, width])? };
            // One thread per block: the pool's threads share the blocks instead.
            // SAFETY: `band.packed` was packed by this packing's A format from `m` rows of
            // `k_padded` values and `block.weights` by its B format from `k_padded × width`,
            // so the kernel reads within both; the store is `acc`'s own layout (`m × width`
            // i32, row stride `width`, column stride 1), so it writes within `acc`.
            multithread_tract_scope(Executor::SingleThread, || unsafe {
                let store = layer
                    .kernel
                    .c_from_data_and_strides(4, width as isize, 1)
                    .wrap(&acc.view_mut());
                layer.kernel.run(
                    m,
                    width,
                    &[
                        FusedSpec::AddMatMul {
                            a: AsInputValue::Borrowed(&*band.packed),
                            b: AsInputValue::Borrowed(&*block.weights),
                            packing: layer.packing,
                        },
                        FusedSpec::Store(store),
                    ],
                )
            })?;
            let acc = acc.try_as_plain_ram()?;
            let columns = block.layer_first..block.layer_first + width;
            let terms = ColumnTerms {
                neg_weight_zero: &layer.neg_weight_zero[columns.clone()],
                column_term: &column_term[columns.clone()],
                column_scale: &column_scale[columns.clone()],
                bias: layer.bias.as_ref().map(|b| &b[columns.clone()]),
            };
            // SAFETY: this task alone touches its band's rows in its block's columns: the
            // bands split the rows and the blocks the columns.
            unsafe {
                epilogue(
                    rows,
                    n,
                    block.first,
                    acc.as_slice::<i32>()?,
                    &band.row_sums,
                    &terms,
                )
            };
            if let (Some(alpha), Some(sigmoid)) = (self.quick_gelu, &sigmoid) {
                let columns = block.first..block.first + width;
                // SAFETY: as for the epilogue: the band's rows, the block's columns.
                unsafe { quick_gelu(rows, n, columns, m, f32::from_bits(alpha), &**sigmoid)? };
            }
            Ok(())
        };
        let pairs = || {
            bands
                .iter()
                .flat_map(|band| layer.blocks.iter().map(move |block| (band, block)))
        };
        // Only inside the encoder's pool: elsewhere rayon would start a global pool.
        if parallel {
            pairs()
                .collect::<Vec<_>>()
                .into_par_iter()
                .try_for_each(task)?;
        } else {
            pairs().try_for_each(task)?;
        }
        Ok(outputs.into_iter().map(|t| t.into_tvalue()).collect())
    }
}

/// Rows of the activations, shifted and packed for the kernel.
struct Band {
    first: usize,
    rows: usize,
    packed: Box<dyn MMMInputValue>,
    row_sums: Vec<i32>,
}

/// The per-column constants of one block, with the activations' scale and zero point folded in.
struct ColumnTerms<'a> {
    neg_weight_zero: &'a [i32],
    column_term: &'a [i32],
    column_scale: &'a [f32],
    bias: Option<&'a [f32]>,
}

with_avx2! {
/// The exact integer sums of one column block (`acc`, rows × block), then scale and bias as
/// the unfused graph applies them, into the block's columns of the `n`-wide rows at `out`.
///
/// # Safety
/// While it runs, nothing else reads or writes columns `first_column..first_column + width`
/// of `out`'s first `acc.len() / width` rows (`width` = the block's columns).
unsafe fn epilogue(
    out: DisjointOut,
    n: usize,
    first_column: usize,
    acc: &[i32],
    row_sums: &[i32],
    terms: &ColumnTerms,
) {
    let width = terms.column_scale.len();
    for (row, (acc_row, &row_sum)) in acc.chunks_exact(width).zip(row_sums).enumerate() {
        // SAFETY: the caller's contract: no one else touches this row's block.
        let y_row = unsafe { out.slice_mut(row * n + first_column, width) };
        let columns = acc_row
            .iter()
            .zip(terms.neg_weight_zero)
            .zip(terms.column_term)
            .zip(terms.column_scale);
        for (y, (((&a, &z), &c), &s)) in y_row.iter_mut().zip(columns) {
            let exact = a.wrapping_add(row_sum.wrapping_mul(z)).wrapping_add(c);
            *y = exact as f32 * s;
        }
        if let Some(bias) = terms.bias {
            for (y, b) in y_row.iter_mut().zip(bias) {
                *y += b;
            }
        }
    }
}
}

/// The bytes of a u8 or i8 tensor, and what XOR turns them into `i8` values offset as the
/// kernel takes them: 0x80 for u8 (`u8 − 128`), 0 for i8.
fn int8_bytes(t: &Tensor) -> TractResult<(&[u8], u8)> {
    let plain = t.try_as_plain_ram()?;
    match t.datum_type() {
        DatumType::U8 => Ok((plain.as_slice::<u8>()?, 0x80)),
        DatumType::I8 => {
            let s = plain.as_slice::<i8>()?;
            // SAFETY: i8 and u8 have the same size and alignment.
            Ok((
                unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, s.len()) },
                0,
            ))
        }
        other => bail!("QuantizedLinear: {other:?} values, expected U8 or I8"),
    }
}

with_avx2! {
/// Weight rows XOR `flip` into `shifted` (rows past the input stay zero), summing columns.
fn shift_weights(raw: &[u8], flip: u8, n: usize, shifted: &mut [i8], column_sum: &mut [i32]) {
    for (src, dst) in raw.chunks_exact(n).zip(shifted.chunks_exact_mut(n)) {
        for ((s, d), sum) in src.iter().zip(dst.iter_mut()).zip(column_sum.iter_mut()) {
            let v = (s ^ flip) as i8;
            *d = v;
            *sum += v as i32;
        }
    }
}
}

with_avx2! {
/// Rows of `k` bytes, each XOR `flip` (0x80 turns u8 into i8 minus 128), padded with zeros
/// to `k_padded`, with each row's sum.
fn shift_rows(bytes: &[u8], k: usize, k_padded: usize, flip: u8) -> (Vec<i8>, Vec<i32>) {
    let rows = bytes.len() / k;
    let mut out = vec![0i8; rows * k_padded];
    let mut sums = Vec::with_capacity(rows);
    for (src, dst) in bytes.chunks_exact(k).zip(out.chunks_exact_mut(k_padded)) {
        let mut sum = 0i32;
        for (s, d) in src.iter().zip(dst.iter_mut()) {
            let v = (s ^ flip) as i8;
            *d = v;
            sum += v as i32;
        }
        sums.push(sum);
    }
    (out, sums)
}
}

impl TypedOp for QuantizedLinear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(self
            .output_shapes(&inputs[0].shape.to_tvec())
            .iter()
            .map(|shape| f32::fact(&**shape))
            .collect())
    }

    as_op!();
}

/// What the pass found around one integer matmul.
#[derive(Clone)]
struct Found {
    /// Outputs feeding the fused op: quantized activations, their scale, their zero point.
    activations: OutletId,
    scale: OutletId,
    zero: OutletId,
    weights: Arc<Tensor>,
    weight_zero: Arc<Tensor>,
    weight_scale: Arc<Tensor>,
    bias: Option<Arc<Tensor>>,
    /// The node whose output the fused op replaces.
    last: usize,
    dropped_axes: TVec<usize>,
    /// Activation rows per call for one item (a symbolic batch counts as one).
    rows: usize,
}

fn is_scalar_value(t: &Tensor, value: f64) -> bool {
    t.len() == 1
        && t.cast_to_scalar::<f64>()
            .map(|v| v == value)
            .unwrap_or(false)
}

/// Skips the rank-fixing `AddAxis` nodes tract inserts before broadcasting.
fn through_add_axes(model: &TypedModel, mut outlet: OutletId) -> OutletId {
    loop {
        let node = model.node(outlet.node);
        match node.op_as::<AxisOp>() {
            Some(AxisOp::Add(_)) if node.inputs.len() == 1 => outlet = node.inputs[0],
            _ => return outlet,
        }
    }
}

fn find(model: &TypedModel, einsum_node: usize) -> Option<Found> {
    let node = model.node(einsum_node);
    let op = node.op_as::<EinSum>()?;
    if op.q_params != Some(DatumType::I32) || node.inputs.len() != 9 {
        return None;
    }
    // A plain matmul over the activations' last axis: "…k,kn->…n", where every activation
    // axis missing from the output has size one.
    let axes = op.axes.to_string();
    let (ins, out) = axes.split_once("->")?;
    let ins: Vec<&str> = ins.split(',').collect();
    let (a_axes, b_axes) = (ins[0], ins[1]);
    let b_axes: Vec<char> = b_axes.chars().collect();
    let [k_axis, n_axis] = b_axes[..] else {
        return None;
    };
    if !a_axes.ends_with(k_axis) || !out.ends_with(n_axis) || out.contains(k_axis) {
        return None;
    }
    let a_fact = model.outlet_fact(node.inputs[0]).ok()?;
    let a_shape = a_fact.shape.to_tvec();
    let kept: String = a_axes.chars().filter(|c| out.contains(*c)).collect();
    if format!("{kept}{n_axis}") != out {
        return None;
    }
    let mut dropped_axes = tvec![];
    for (ix, c) in a_axes.chars().enumerate() {
        if c != k_axis && !out.contains(c) {
            if !a_shape[ix].is_one() {
                return None;
            }
            dropped_axes.push(ix);
        }
    }
    // Only the weight zero point (input 5) may be per column; every other q-param is a scalar.
    let per_column = n_axis.to_string();
    if ins
        .iter()
        .enumerate()
        .skip(2)
        .any(|(i, s)| !(s.is_empty() || i == 5 && *s == per_column))
    {
        return None;
    }
    let weights = konst(model, node.inputs[1])?;
    let weight_zero = konst(model, node.inputs[5])?;
    let bias = konst(model, node.inputs[2])?;
    let ones = [4, 6, 8].map(|i| konst(model, node.inputs[i]));
    if !is_scalar_value(&bias, 0.0)
        || ones
            .iter()
            .any(|c| !c.as_ref().is_some_and(|c| is_scalar_value(c, 1.0)))
        || !konst(model, node.inputs[7]).is_some_and(|c| is_scalar_value(&c, 0.0))
    {
        return None;
    }
    let zero = node.inputs[3];
    if model.outlet_fact(zero).ok()?.shape.volume() != 1.to_dim()
        || !matches!(a_fact.datum_type, DatumType::U8 | DatumType::I8)
        || !matches!(weights.datum_type(), DatumType::U8 | DatumType::I8)
        || weights.rank() != 2
    {
        return None;
    }
    let n = weights.shape()[1];

    // Cast to f32, then the product of scales.
    let cast = single_successor(model, einsum_node)?;
    if model.node(cast).op_as::<Cast>()?.to != DatumType::F32 {
        return None;
    }
    let mul = binary_named(model, single_successor(model, cast)?, "Mul")?;
    let scales = through_add_axes(model, other_input(mul, cast)?);
    let scales = binary_named(model, scales.node, "Mul")?;
    let (mut weight_scale, mut scale) = (None, None);
    for input in &scales.inputs {
        let input = through_add_axes(model, *input);
        match konst(model, input) {
            Some(c) if c.len() == n || c.len() == 1 => weight_scale = Some(c),
            _ => scale = Some(input),
        }
    }
    let (weight_scale, scale) = (weight_scale?, scale?);
    if model.outlet_fact(scale).ok()?.datum_type != DatumType::F32
        || model.outlet_fact(scale).ok()?.shape.volume() != 1.to_dim()
    {
        return None;
    }

    // An optional per-column bias.
    let mut last = mul.id;
    let mut bias = None;
    if let Some(add) = single_successor(model, mul.id).and_then(|s| binary_named(model, s, "Add")) {
        if let Some(b) = other_input(add, mul.id).and_then(|o| konst(model, o)) {
            if b.len() == n && b.datum_type() == DatumType::F32 {
                bias = Some(b);
                last = add.id;
            }
        }
    }
    let output = model
        .outlet_fact(OutletId::new(last, 0))
        .ok()?
        .shape
        .to_tvec();
    if output_shape(&a_shape, &dropped_axes, n) != output {
        return None;
    }
    let rows = a_shape[..a_shape.len() - 1]
        .iter()
        .map(|d| d.to_usize().unwrap_or(1))
        .product();
    Some(Found {
        activations: node.inputs[0],
        scale,
        zero,
        weights,
        weight_zero,
        weight_scale,
        bias,
        last,
        dropped_axes,
        rows,
    })
}

/// The int8 kernels this CPU can run for a `k × n` weight packed ahead of time.
fn candidates(k: usize, n: usize) -> Vec<Choice> {
    let mut query = Query::plain(DatumType::I32, None, Some(k), Some(n));
    query.store = Some(DatumType::I32);
    // Weights are packed once: a kernel reached through a panel extractor would repack on
    // every call.
    query.allow_extractor = false;
    let dispatch = MmmDispatch::native();
    let suitable: Vec<_> = dispatch
        .suitable(&query)
        .into_iter()
        .filter(|(kernel, _, extractor)| extractor.is_none() && kernel.runnable())
        .collect();
    // Portable Rust kernels are a last resort: several times slower wherever a kernel
    // written for the architecture runs, so not worth timing next to one.
    let suitable = if suitable
        .iter()
        .any(|(kernel, _, _)| kernel.arch().is_some())
    {
        suitable
            .into_iter()
            .filter(|(kernel, _, _)| kernel.arch().is_some())
            .collect()
    } else {
        suitable
    };
    let mut out: Vec<Choice> = vec![];
    if let Some((kernel, packing, _)) = dispatch.preferred(&query, &suitable) {
        out.push((kernel, packing));
    }
    for (kernel, packing, _) in suitable {
        if !out.iter().any(|(k, _)| k.name() == kernel.name()) {
            out.push((kernel, packing));
        }
    }
    out
}

/// Times `choice` on a `rows × k × n` product of arbitrary bytes: the best of `runs`.
fn time_kernel(
    choice: &Choice,
    rows: usize,
    k: usize,
    n: usize,
    runs: usize,
) -> TractResult<std::time::Duration> {
    let (kernel, packing) = choice;
    let (a_format, b_format) = &kernel.packings()[*packing];
    let k_padded = k.next_multiple_of(a_format.k_alignment().max(b_format.k_alignment()).max(1));
    let bytes = |len: usize| -> Vec<i8> {
        (0..len)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as i8)
            .collect()
    };
    let a = Tensor::from_shape(&[rows, k_padded], &bytes(rows * k_padded))?;
    let a = a_format.prepare_one(&a, 1, 0)?;
    let b = Tensor::from_shape(&[k_padded, n], &bytes(k_padded * n))?;
    let b = b_format.prepare_one(&b, 0, 1)?;
    // SAFETY: only the kernel stores into `c`, and nothing reads it.
    let c = unsafe { Tensor::uninitialized::<i32>(&[rows, n])? };
    // SAFETY: `a` was packed by the choice's A format from `rows × k_padded`, `b` by its B
    // format from `k_padded × n`, and `c` is `rows × n` i32.
    unsafe { best_run(choice, (&*a, &*b), c, runs) }
}

/// The fastest kernel for this encoder's layer shape, measured: tract's own preference
/// reasons from the instruction set alone (on a core with one 512-bit FMA port it keeps to
/// 8×8 tiles, where 16×16 tiles still win 20–30 % on AMD Zen 4). Each candidate runs the
/// layer's product at one item's rows and at four items' rows; one that is clearly slower
/// than the best so far on a single run is dropped at once, so this costs a few
/// milliseconds at load. `CLIPTAG_INT8_KERNEL` names a kernel and skips the measurement.
fn choose_kernel(rows: usize, k: usize, n: usize) -> TractResult<Choice> {
    let mut candidates = candidates(k, n);
    if let Ok(name) = std::env::var("CLIPTAG_INT8_KERNEL") {
        candidates.retain(|(kernel, _)| kernel.name() == name);
    }
    let mut best: Option<(std::time::Duration, Choice)> = None;
    for choice in candidates {
        if let Some((best_time, _)) = &best {
            if time_kernel(&choice, rows, k, n, 1)? > *best_time * 2 {
                continue;
            }
        }
        let time =
            time_kernel(&choice, rows, k, n, 3)? + time_kernel(&choice, rows * 4, k, n, 2)? / 4;
        tracing::debug!(
            kernel = choice.0.name(),
            ?time,
            rows,
            k,
            n,
            "int8 kernel timed"
        );
        if best.as_ref().is_none_or(|(t, _)| time < *t) {
            best = Some((time, choice));
        }
    }
    best.map(|(_, choice)| choice)
        .ok_or_else(|| format_err!("no int8 matmul kernel for k={k} n={n}"))
}

/// Packs a layer whose columns are `splits` outputs side by side (one output: `[n]`).
fn pack(found: &Found, (kernel, packing): Choice, splits: &[usize]) -> TractResult<PackedLinear> {
    let (k, n) = (found.weights.shape()[0], found.weights.shape()[1]);
    let (a_format, b_format) = &kernel.packings()[packing];
    let alignment = a_format.k_alignment().max(b_format.k_alignment()).max(1);
    let k_padded = k.next_multiple_of(alignment);

    let (raw, flip) = int8_bytes(&found.weights)?;
    let mut shifted = vec![0i8; k_padded * n];
    let mut column_sum = vec![0i32; n];
    shift_weights(raw, flip, n, &mut shifted, &mut column_sum);
    ensure!(
        splits.iter().sum::<usize>() == n,
        "outputs {splits:?} for {n} columns"
    );
    let mut blocks = vec![];
    let mut layer_first = 0;
    for (output, &output_width) in splits.iter().enumerate() {
        let block = block_width(output_width, kernel.nr());
        for first in (0..output_width).step_by(block) {
            let width = block.min(output_width - first);
            let from = layer_first + first;
            let columns: Vec<i8> = shifted
                .chunks_exact(n)
                .flat_map(|row| &row[from..from + width])
                .copied()
                .collect();
            let weights =
                b_format.prepare_one(&Tensor::from_shape(&[k_padded, width], &columns)?, 0, 1)?;
            blocks.push(Block {
                weights,
                output,
                first,
                width,
                layer_first: from,
            });
        }
        layer_first += output_width;
    }

    let zero_offset = if found.weight_zero.datum_type() == DatumType::U8 {
        128
    } else {
        0
    };
    let zeros = found.weight_zero.cast_to::<i32>()?;
    let zeros = zeros.try_as_plain_ram()?;
    let zeros = zeros.as_slice::<i32>()?;
    let zero_at = |j: usize| zeros[if zeros.len() == 1 { 0 } else { j }] - zero_offset;
    let neg_weight_zero = (0..n).map(|j| -zero_at(j)).collect();
    let column_term = (0..n)
        .map(|j| k as i32 * zero_at(j) - column_sum[j])
        .collect();
    let scales = found.weight_scale.cast_to::<f32>()?;
    let scales = scales.try_as_plain_ram()?;
    let scales = scales.as_slice::<f32>()?;
    let weight_scale = (0..n)
        .map(|j| scales[if scales.len() == 1 { 0 } else { j }])
        .collect();
    let bias = match &found.bias {
        Some(b) => Some(b.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()),
        None => None,
    };
    // Identity for tract's graph hashing: shape, zero points and scales (a full hash of the
    // weights would cost more than packing them).
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (k, n).hash(&mut hasher);
    found.weight_zero.hash(&mut hasher);
    found.weight_scale.hash(&mut hasher);
    Ok(PackedLinear {
        kernel,
        packing,
        blocks,
        splits: splits.into(),
        k,
        k_padded,
        n,
        neg_weight_zero,
        column_term,
        weight_scale,
        bias,
        fingerprint: hasher.finish(),
    })
}

/// Fuses every matching layer of a decluttered typed model; returns how many.
pub fn fuse_quantized_linear(model: &mut TypedModel) -> TractResult<usize> {
    // Layers that read the same quantized input (attention's Q, K and V) become one op with
    // an output each: the input is shifted and packed once, and the pool shares out the
    // blocks of all three together.
    let mut groups: Vec<Vec<Found>> = vec![];
    for id in model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<EinSum>())
        .map(|n| n.id)
    {
        let Some(found) = find(model, id) else {
            continue;
        };
        match groups.iter_mut().find(|g| mergeable(&g[0], &found)) {
            Some(group) => group.push(found),
            None => groups.push(vec![found]),
        }
    }
    let mut fused = 0;
    let mut kernel: Option<Choice> = None;
    for group in groups {
        let name = model.node(group[0].last).name.clone();
        let splits: TVec<usize> = group.iter().map(|f| f.weights.shape()[1]).collect();
        let merged = merge(&group)?;
        // One timing per encoder: its layers differ in shape, not in what suits the CPU.
        let choice = match &kernel {
            Some(choice) => choice.clone(),
            None => {
                let (k, n) = (group[0].weights.shape()[0], splits[0]);
                kernel.insert(choose_kernel(merged.rows, k, n)?).clone()
            }
        };
        let layer = Arc::new(pack(&merged, choice, &splits)?);
        let mut patch = TypedModelPatch::new(format!("fuse {name}"));
        let inputs = [merged.activations, merged.scale, merged.zero]
            .iter()
            .map(|o| patch.tap_model(model, *o))
            .collect::<TractResult<TVec<_>>>()?;
        let op = QuantizedLinear {
            layer,
            dropped_axes: merged.dropped_axes.clone(),
            quick_gelu: None,
        };
        let wires = patch.wire_node(format!("{name}.fused"), op, &inputs)?;
        for (found, wire) in group.iter().zip(wires) {
            patch.shunt_outside(model, OutletId::new(found.last, 0), wire)?;
        }
        patch.apply(model)?;
        fused += group.len();
    }
    if fused > 0 {
        model.compact()?;
        let gelus = fuse_quick_gelu(model)?;
        tracing::debug!(gelus, "QuickGELU activations fused into int8 layers");
    }
    Ok(fused)
}

/// Whether two layers read the same quantized activations the same way, with weights of
/// the same kind, so one op can compute both.
fn mergeable(a: &Found, b: &Found) -> bool {
    (a.activations, a.scale, a.zero) == (b.activations, b.scale, b.zero)
        && a.dropped_axes == b.dropped_axes
        && a.weights.datum_type() == b.weights.datum_type()
        && a.weights.shape()[0] == b.weights.shape()[0]
        && a.weight_zero.datum_type() == b.weight_zero.datum_type()
}

/// The layers of a group as one layer whose columns are theirs side by side.
fn merge(group: &[Found]) -> TractResult<Found> {
    let [first, rest @ ..] = group else {
        bail!("an empty group of layers");
    };
    if rest.is_empty() {
        return Ok(first.clone());
    }
    // Scalar zero points and scales become one value per column.
    let per_column = |t: &Tensor, n: usize| -> TractResult<Tensor> {
        if t.len() == 1 {
            t.broadcast_scalar_to_shape(&[n])
        } else {
            Ok(t.clone())
        }
    };
    let widths: Vec<usize> = group.iter().map(|f| f.weights.shape()[1]).collect();
    let weights: Vec<&Tensor> = group.iter().map(|f| &*f.weights).collect();
    let zeros = group
        .iter()
        .zip(&widths)
        .map(|(f, n)| per_column(&f.weight_zero, *n))
        .collect::<TractResult<Vec<_>>>()?;
    let scales = group
        .iter()
        .zip(&widths)
        .map(|(f, n)| per_column(&*f.weight_scale.cast_to::<f32>()?, *n))
        .collect::<TractResult<Vec<_>>>()?;
    // A layer without a bias adds zeros: `y + 0.0` is `y`.
    let bias = if group.iter().any(|f| f.bias.is_some()) {
        let parts = group
            .iter()
            .zip(&widths)
            .map(|(f, n)| match &f.bias {
                Some(b) => b.cast_to::<f32>().map(|b| b.into_owned()),
                None => Ok(Tensor::zero::<f32>(&[*n])?),
            })
            .collect::<TractResult<Vec<_>>>()?;
        Some(Tensor::stack_tensors(0, &parts)?.into_arc_tensor())
    } else {
        None
    };
    Ok(Found {
        weights: Tensor::stack_tensors(1, &weights)?.into_arc_tensor(),
        weight_zero: Tensor::stack_tensors(0, &zeros)?.into_arc_tensor(),
        weight_scale: Tensor::stack_tensors(0, &scales)?.into_arc_tensor(),
        bias,
        ..first.clone()
    })
}

/// `y·sigmoid(α·y)` after a fused layer (`Mul(y, α) → Sigmoid → Mul(y, ·)`, CLIP's
/// QuickGELU) moves into the layer's epilogue: three passes over a `[tokens, 4·width]`
/// tensor fewer, done per column block while the block is in cache.
fn fuse_quick_gelu(model: &mut TypedModel) -> TractResult<usize> {
    let layers: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<QuantizedLinear>()
                .is_some_and(|q| q.quick_gelu.is_none())
        })
        .map(|n| n.id)
        .collect();
    let mut fused = 0;
    for id in layers {
        let Some((alpha, last)) = find_quick_gelu(model, id) else {
            continue;
        };
        let node = model.node(id);
        let Some(op) = node.op_as::<QuantizedLinear>() else {
            continue;
        };
        let mut op = op.clone();
        op.quick_gelu = Some(alpha.to_bits());
        let name = node.name.clone();
        let mut patch = TypedModelPatch::new(format!("quick gelu {name}"));
        let inputs = node
            .inputs
            .iter()
            .map(|o| patch.tap_model(model, *o))
            .collect::<TractResult<TVec<_>>>()?;
        let wire = patch.wire_node(format!("{name}.gelu"), op, &inputs)?[0];
        patch.shunt_outside(model, OutletId::new(last, 0), wire)?;
        patch.apply(model)?;
        fused += 1;
    }
    if fused > 0 {
        model.compact()?;
    }
    Ok(fused)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn byte(&mut self) -> u8 {
            (self.next() >> 32) as u8
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    /// The unfused graph's arithmetic, written plainly.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        a: &[i32],
        a_zero: i32,
        a_scale: f32,
        w: &[i32],
        w_zero: &[i32],
        w_scale: &[f32],
        bias: Option<&[f32]>,
        (m, k, n): (usize, usize, usize),
    ) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let zw = w_zero[if w_zero.len() == 1 { 0 } else { j }];
                let acc: i32 = (0..k)
                    .map(|p| (a[i * k + p] - a_zero) * (w[p * n + j] - zw))
                    .sum();
                let ws = w_scale[if w_scale.len() == 1 { 0 } else { j }];
                out[i * n + j] = acc as f32 * (ws * a_scale) + bias.map_or(0.0, |b| b[j]);
            }
        }
        out
    }

    fn bytes_tensor(signed: bool, shape: &[usize], bytes: &[u8]) -> Tensor {
        if signed {
            let v: Vec<i8> = bytes.iter().map(|b| *b as i8).collect();
            Tensor::from_shape(shape, &v).unwrap()
        } else {
            Tensor::from_shape(shape, bytes).unwrap()
        }
    }

    fn as_ints(signed: bool, bytes: &[u8]) -> Vec<i32> {
        bytes
            .iter()
            .map(|b| if signed { *b as i8 as i32 } else { *b as i32 })
            .collect()
    }

    #[test]
    fn fused_layer_matches_the_unfused_arithmetic_exactly() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        // (rows, k, n, activations signed, weights signed, per-column zero, bias):
        // k = 37 is not a multiple of the packing's k alignment.
        let cases = [
            (50, 64, 48, false, false, true, true),
            (7, 37, 19, false, true, false, false),
            (154, 96, 33, true, false, true, false),
            (1, 8, 8, true, true, false, true),
            // Nine column blocks, the last one partial.
            (33, 40, 1100, false, true, true, true),
        ];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (m, k, n, a_signed, w_signed, per_column, with_bias) in cases {
            let a_bytes: Vec<u8> = (0..m * k).map(|_| rng.byte()).collect();
            let w_bytes: Vec<u8> = (0..k * n).map(|_| rng.byte()).collect();
            let zeros: Vec<u8> = (0..if per_column { n } else { 1 })
                .map(|_| rng.byte())
                .collect();
            let w_scale: Vec<f32> = (0..n).map(|_| 1e-4 + 1e-3 * rng.unit()).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng.unit() - 0.5).collect();
            let a_zero = rng.byte();
            let a_scale = 0.01 + rng.unit() * 0.05;

            let found = Found {
                activations: OutletId::new(0, 0),
                scale: OutletId::new(0, 0),
                zero: OutletId::new(0, 0),
                weights: bytes_tensor(w_signed, &[k, n], &w_bytes).into_arc_tensor(),
                weight_zero: bytes_tensor(w_signed, &[zeros.len()], &zeros).into_arc_tensor(),
                weight_scale: Tensor::from_shape(&[n], &w_scale)
                    .unwrap()
                    .into_arc_tensor(),
                bias: with_bias.then(|| Tensor::from_shape(&[n], &bias).unwrap().into_arc_tensor()),
                last: 0,
                dropped_axes: tvec![],
                rows: m,
            };
            let choices = candidates(k, n);
            assert!(!choices.is_empty());
            for choice in choices {
                let kernel = choice.0.name().to_string();
                // Wide layers are also packed as two outputs side by side, as merged layers are.
                let splits: TVec<usize> = if n > 100 {
                    tvec![n / 3, n - n / 3]
                } else {
                    tvec![n]
                };
                let op = QuantizedLinear {
                    layer: Arc::new(pack(&found, choice, &splits).unwrap()),
                    dropped_axes: tvec![],
                    quick_gelu: None,
                };
                let zero_tensor = bytes_tensor(a_signed, &[], &[a_zero]);
                let eval = || {
                    let out = op
                        .eval(
                            &EvalContext::out_of_plan(),
                            tvec![
                                bytes_tensor(a_signed, &[m, k], &a_bytes).into_tvalue(),
                                tensor0(a_scale).into_tvalue(),
                                zero_tensor.clone().into_tvalue(),
                            ],
                        )
                        .unwrap();
                    // The outputs' rows side by side again.
                    let parts: Vec<Vec<f32>> = out
                        .iter()
                        .map(|o| {
                            o.try_as_plain_ram()
                                .unwrap()
                                .as_slice::<f32>()
                                .unwrap()
                                .to_vec()
                        })
                        .collect();
                    (0..m)
                        .flat_map(|row| {
                            parts
                                .iter()
                                .zip(&splits)
                                .flat_map(move |(p, w)| p[row * w..(row + 1) * w].to_vec())
                        })
                        .collect::<Vec<f32>>()
                };
                let got = eval();
                // The column blocks shared out by a pool give the same values.
                assert_eq!(got, pool.install(eval), "case m={m} k={k} n={n}, in a pool");
                let want = reference(
                    &as_ints(a_signed, &a_bytes),
                    as_ints(a_signed, &[a_zero])[0],
                    a_scale,
                    &as_ints(w_signed, &w_bytes),
                    &as_ints(w_signed, &zeros),
                    &w_scale,
                    with_bias.then_some(&bias[..]),
                    (m, k, n),
                );
                assert_eq!(got, want, "case m={m} k={k} n={n}, kernel {kernel}");
            }
        }
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;
    use crate::test_support::{agreement, decluttered, inputs, run};

    /// The pass on onnxruntime's real int8 exports of the fixture, at batch 2 (so the
    /// `[batch, tokens, K]` inputs are flattened): every integer matmul is fused, and every
    /// output agrees with tract's own unfused graph (cosine ≥ 0.999 999, |Δ| ≤ 1e-5).
    #[test]
    fn fusing_real_int8_exports_keeps_every_output() {
        let (pixels, ids) = inputs(2);
        for (file, input) in [
            ("vision_model_quantized.onnx", pixels),
            ("text_model_quantized.onnx", ids),
        ] {
            let model = decluttered(file, &input);
            let integer_matmuls = model
                .nodes()
                .iter()
                .filter(|n| n.op_as::<EinSum>().is_some_and(|e| e.q_params.is_some()))
                .count();
            let mut fused_model = model.clone();
            let fused = fuse_quantized_linear(&mut fused_model).unwrap();
            // The patch embedding of the vision tower is a convolution, not an EinSum.
            assert!(fused >= 12, "{file}: only {fused} layers fused");
            assert_eq!(
                fused, integer_matmuls,
                "{file}: some integer matmuls were not fused"
            );

            let want = run(model, &input);
            let got = run(fused_model, &input);
            assert_eq!(want.len(), got.len());
            for (w, g) in want.iter().zip(&got) {
                let (cosine, max_diff) = agreement(w, g);
                assert!(
                    cosine >= 0.999_999 && max_diff <= 1e-5,
                    "{file}: cosine {cosine}, max |Δ| {max_diff}"
                );
            }
        }
    }
}
