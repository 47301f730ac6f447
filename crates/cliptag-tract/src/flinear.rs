//! A graph pass: fuse each fp32 linear layer (a matmul by a constant weight, its bias and,
//! where it follows, CLIP's QuickGELU) into one op that runs tract-linalg's f32 kernel over
//! column blocks of weights packed at load, the fp32 twin of [`crate::qlinear`].
//!
//! What tract's own codegen does differently for these layers, and what each costs:
//! - It picks the kernel by reasoning from the instruction set; for the text tower's 77
//!   tokens it takes AVX-512 16×8, 10–20 % slower on those shapes, in our timings, than the
//!   best kernel a timing finds (32×6, 48×4 or 64×3 on the Xeon measured).
//! - With a batch of items, `[batch, tokens, K]` runs as `batch` products of `tokens` rows;
//!   here it is one product of `batch·tokens` rows.
//! - Bias and QuickGELU are separate passes over `[tokens, 4·width]`; here they run per
//!   column block while the block is in cache.
//! - It keeps the ONNX weights and its packed copy; here only the packed copy stays
//!   (ViT-B/32 fp32 vision + text with plans for batches 1 and 8: peak RSS 1.9 → 1.2 GB).
//!
//! Rules, and why:
//! - Same products, same bias, same QuickGELU steps as the unfused graph; only the order of
//!   the float additions inside the kernel may differ, so outputs agree within float
//!   rounding (checked on the fixture exports: cosine ≥ 0.999 999).
//! - The weights sit on the kernel's `mr` side, as tract puts a constant, and the tokens on
//!   its `nr` side; the kernel stores straight into the output through strides.
//! - Each column block's product and epilogue is one task for the encoder's pool.
//! - The kernel is timed at load among tract-linalg's f32 kernels for this CPU, so a generic
//!   build gets the AVX-512 ones where the CPU has them. `CLIPTAG_F32_KERNEL` names one.
//! - Weights that reduce over several axes (attention's output projection reads
//!   `[heads, head width]`) or are stored transposed (`…k,nk->…n`) are flattened or
//!   transposed once at load. Anything else is left to tract.
//! - Stands for upstream changes: kernel choice by measurement, folding batch axes into the
//!   product's rows, and fusing element-wise successors into the matmul's epilogue.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rayon::prelude::*;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MMMInputValue, MatMatMul, MmmDispatch, Query};
use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_linalg::routines::Func;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

use crate::disjoint::DisjointOut;
use crate::epilogue::quick_gelu;
use crate::kernel::{best_run, block_width, Choice};
use crate::pattern::{binary_named, find_quick_gelu, konst, other_input, single_successor};

/// One layer's weights, packed for the kernel's `a` side in column blocks.
#[derive(Debug)]
pub struct PackedFloatLinear {
    kernel: Box<dyn MatMatMul>,
    packing: usize,
    blocks: Vec<FloatBlock>,
    k: usize,
    n: usize,
    bias: Option<Vec<f32>>,
    fingerprint: u64,
}

#[derive(Debug)]
struct FloatBlock {
    weights: Box<dyn MMMInputValue>,
    first: usize,
    width: usize,
}

#[derive(Clone, Debug)]
pub struct FloatLinear {
    layer: Arc<PackedFloatLinear>,
    /// Activation axes of size one that the matmul drops from its output.
    dropped_axes: TVec<usize>,
    /// How many trailing activation axes are summed over (two where attention's heads and
    /// head width meet the output projection).
    reduced: usize,
    /// QuickGELU's `α` after the layer, as bits.
    quick_gelu: Option<u32>,
}

impl Hash for FloatLinear {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.layer.fingerprint.hash(state);
        self.dropped_axes.hash(state);
        self.reduced.hash(state);
        self.quick_gelu.hash(state);
    }
}

impl PartialEq for FloatLinear {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.layer, &other.layer)
            && self.dropped_axes == other.dropped_axes
            && self.reduced == other.reduced
            && self.quick_gelu == other.quick_gelu
    }
}
impl Eq for FloatLinear {}

impl FloatLinear {
    fn output_shape<D: Clone + From<usize>>(&self, input: &[D]) -> TVec<D> {
        let mut shape: TVec<D> = input[..input.len() - self.reduced]
            .iter()
            .enumerate()
            .filter(|(ix, _)| !self.dropped_axes.contains(ix))
            .map(|(_, d)| d.clone())
            .collect();
        shape.push(self.layer.n.into());
        shape
    }
}

impl Op for FloatLinear {
    fn name(&self) -> StaticName {
        "FloatLinear".into()
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
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FloatLinear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let layer = &*self.layer;
        let (k, n) = (layer.k, layer.n);
        let input = inputs[0].try_as_plain_ram()?;
        let xs = input.as_slice::<f32>()?;
        let m = xs.len() / k;
        let flat = Tensor::from_shape(&[m, k], xs)?;
        let (_, b_format) = &layer.kernel.packings()[layer.packing];
        let activations = b_format.prepare_one(&flat, 1, 0)?;
        let sigmoid = match self.quick_gelu {
            Some(_) => Some(Func::Sigmoid.ew_f32()?),
            None => None,
        };
        let shape = self.output_shape(inputs[0].shape());
        // SAFETY: every element is stored before anything reads it: each block's kernel
        // stores all `m` rows of its columns, and the blocks cover columns 0..n (`pack`).
        let mut output = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        ensure!(
            output.len() == m * n,
            "FloatLinear: output of {} values, expected {m}×{n}",
            output.len()
        );
        // The kernels store through views of `output`, so the epilogue's handle comes from
        // the same raw pointer, not from a borrow of the whole buffer.
        let base = output.try_as_plain_ram_mut()?.as_ptr_mut::<f32>()?;
        // SAFETY: `base` holds the `m × n` values of `output`, which outlives the tasks (they
        // end before it is returned) and is not otherwise touched meanwhile. Each task
        // touches only its block's columns: first its kernel stores them, then, after the
        // kernel has returned, the epilogue goes through `out`.
        let out = unsafe { DisjointOut::from_raw_parts(base, m * n) };
        let task = |block: &FloatBlock| -> TractResult<()> {
            // The kernel's rows are the block's output columns (stride 1), its columns the
            // tokens (stride n), so it stores straight into the `[m, n]` output.
            let columns = block.first..block.first + block.width;
            let (shape, strides) = ([block.width, m], [1, n as isize]);
            // SAFETY: the view is `block.width × m` values from column `block.first` with
            // the output's strides (1 along the block's columns, n along the rows), so it and
            // the store built on it lie within the `m × n` output and this block's columns.
            // `block.weights` was packed by this packing's A format from `k × block.width`,
            // `activations` by its B format from `m × k`, so the kernel reads within both.
            multithread_tract_scope(Executor::SingleThread, || unsafe {
                let view =
                    TensorView::from_bytes(&output, (block.first * 4) as isize, &shape, &strides);
                let store = layer
                    .kernel
                    .c_from_data_and_strides(4, 1, n as isize)
                    .wrap(&view);
                layer.kernel.run(
                    block.width,
                    m,
                    &[
                        FusedSpec::AddMatMul {
                            a: AsInputValue::Borrowed(&*block.weights),
                            b: AsInputValue::Borrowed(&*activations),
                            packing: layer.packing,
                        },
                        FusedSpec::Store(store),
                    ],
                )
            })?;
            if let Some(bias) = &layer.bias {
                // SAFETY: this task alone touches its block's columns, and its kernel is done.
                unsafe { add_bias(out, n, columns.clone(), m, &bias[columns.clone()]) };
            }
            if let (Some(alpha), Some(sigmoid)) = (self.quick_gelu, &sigmoid) {
                // SAFETY: as for the bias.
                unsafe { quick_gelu(out, n, columns, m, f32::from_bits(alpha), &**sigmoid)? };
            }
            Ok(())
        };
        let parallel = rayon::current_thread_index().is_some() && rayon::current_num_threads() > 1;
        if parallel {
            layer.blocks.par_iter().try_for_each(task)?;
        } else {
            layer.blocks.iter().try_for_each(task)?;
        }
        Ok(tvec![output.into_tvalue()])
    }
}

/// Adds `bias` to the block's `columns` of each of the `m` rows.
///
/// # Safety
/// While it runs, nothing else reads or writes `columns` of `out`'s first `m` rows (rows of
/// `n` values).
unsafe fn add_bias(
    out: DisjointOut,
    n: usize,
    columns: std::ops::Range<usize>,
    m: usize,
    bias: &[f32],
) {
    for r in 0..m {
        // SAFETY: the caller's contract: no one else touches these columns of this row.
        let row = unsafe { out.slice_mut(r * n + columns.start, bias.len()) };
        for (y, b) in row.iter_mut().zip(bias) {
            *y += b;
        }
    }
}

impl TypedOp for FloatLinear {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(
            &*self.output_shape(&inputs[0].shape.to_tvec())
        )))
    }

    as_op!();
}

/// What the pass found around one f32 matmul by a constant.
struct Found {
    activations: OutletId,
    weights: Arc<Tensor>,
    bias: Option<Arc<Tensor>>,
    /// The node whose output the fused op replaces.
    last: usize,
    dropped_axes: TVec<usize>,
    reduced: usize,
    /// Activation rows per call for one item (a symbolic batch counts as one).
    rows: usize,
}

fn find(model: &TypedModel, einsum_node: usize) -> Option<Found> {
    let node = model.node(einsum_node);
    let op = node.op_as::<EinSum>()?;
    if op.q_params.is_some() || node.inputs.len() != 2 || op.operating_dt != DatumType::F32 {
        return None;
    }
    // "…k,kn->…n", where every activation axis missing from the output has size one. The
    // weights may reduce over several trailing axes ("…hk,hkn->…n") or be stored transposed
    // ("…k,nk->…n").
    let axes = op.axes.to_string();
    let (ins, out) = axes.split_once("->")?;
    let (a_axes, b_axes) = ins.split_once(',')?;
    let n_axis = out.chars().last()?;
    let transposed = b_axes.len() == 2 && b_axes.starts_with(n_axis);
    let reduction: String = if transposed {
        b_axes[1..].to_string()
    } else {
        b_axes.strip_suffix(n_axis)?.to_string()
    };
    if reduction.is_empty()
        || !a_axes.ends_with(&reduction)
        || reduction.chars().any(|c| out.contains(c))
    {
        return None;
    }
    let a_fact = model.outlet_fact(node.inputs[0]).ok()?;
    if a_fact.datum_type != DatumType::F32 {
        return None;
    }
    let a_shape = a_fact.shape.to_tvec();
    let kept: String = a_axes.chars().filter(|c| out.contains(*c)).collect();
    if format!("{kept}{n_axis}") != out {
        return None;
    }
    let mut dropped_axes = tvec![];
    for (ix, c) in a_axes.chars().enumerate() {
        if !reduction.contains(c) && !out.contains(c) {
            if !a_shape[ix].is_one() {
                return None;
            }
            dropped_axes.push(ix);
        }
    }
    let weights = konst(model, node.inputs[1])?;
    if weights.datum_type() != DatumType::F32 || weights.rank() != reduction.len() + 1 {
        return None;
    }
    let weights = if transposed {
        (*weights).clone().permute_axes(&[1, 0]).ok()?
    } else {
        (*weights).clone()
    };
    let n = *weights.shape().last()?;
    let k = weights.len() / n.max(1);
    let weights = weights.into_shape(&[k, n]).ok()?.into_arc_tensor();
    let mut last = einsum_node;
    let mut bias = None;
    if let Some(add) =
        single_successor(model, einsum_node).and_then(|s| binary_named(model, s, "Add"))
    {
        if let Some(b) = other_input(add, einsum_node).and_then(|o| konst(model, o)) {
            if b.len() == n && b.datum_type() == DatumType::F32 {
                bias = Some(b);
                last = add.id;
            }
        }
    }
    let rows = a_shape[..a_shape.len() - reduction.len()]
        .iter()
        .map(|d| d.to_usize().unwrap_or(1))
        .product();
    Some(Found {
        activations: node.inputs[0],
        weights,
        bias,
        last,
        dropped_axes,
        reduced: reduction.len(),
        rows,
    })
}

/// The f32 kernels this CPU can run with a `k × n` weight packed ahead of time on the `a`
/// side: written for the architecture where any is, else tract's portable ones.
fn candidates(k: usize, n: usize) -> Vec<Choice> {
    let mut query = Query::plain(DatumType::F32, Some(n), Some(k), None);
    query.store = Some(DatumType::F32);
    query.allow_extractor = false;
    let suitable: Vec<_> = MmmDispatch::native()
        .suitable(&query)
        .into_iter()
        .filter(|(kernel, _, extractor)| extractor.is_none() && kernel.runnable())
        .collect();
    let native = suitable
        .iter()
        .any(|(kernel, _, _)| kernel.arch().is_some());
    let mut out: Vec<Choice> = vec![];
    // tract's own preference first: it is what a cut-short timing falls back to.
    if let Some((kernel, packing, _)) = MmmDispatch::native().preferred(&query, &suitable) {
        if kernel.arch().is_some() || !native {
            out.push((kernel, packing));
        }
    }
    for (kernel, packing, _) in suitable {
        if (kernel.arch().is_some() || !native)
            && !out.iter().any(|(k, _)| k.name() == kernel.name())
        {
            out.push((kernel, packing));
        }
    }
    out
}

/// Times `choice` on a 128-column block of a `k`-deep layer against `rows` tokens: best of
/// `runs`.
fn time_kernel(
    choice: &Choice,
    rows: usize,
    k: usize,
    runs: usize,
) -> TractResult<std::time::Duration> {
    let (kernel, packing) = choice;
    let (a_format, b_format) = &kernel.packings()[*packing];
    let width = 128;
    let values = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 13) % 255) as f32 / 255.0 - 0.5)
            .collect()
    };
    let w = a_format.prepare_one(&Tensor::from_shape(&[k, width], &values(k * width))?, 0, 1)?;
    let x = b_format.prepare_one(&Tensor::from_shape(&[rows, k], &values(rows * k))?, 1, 0)?;
    // SAFETY: only the kernel stores into `c`, and nothing reads it.
    let c = unsafe { Tensor::uninitialized::<f32>(&[width, rows])? };
    // SAFETY: `w` was packed by the choice's A format from `k × width`, `x` by its B format
    // from `rows × k`, and `c` is `width × rows` f32.
    unsafe { best_run(choice, (&*w, &*x), c, runs) }
}

/// The fastest kernel for this encoder's layers at one item's rows and at eight items'.
/// The timing stops after [`TIMING_BUDGET`] (tens of milliseconds on a real core; under
/// emulation it ends after tract's own choice). `CLIPTAG_F32_KERNEL` names a kernel and
/// skips the timing.
fn choose_kernel(rows: usize, k: usize, n: usize) -> TractResult<Choice> {
    let mut candidates = candidates(k, n);
    if let Ok(name) = std::env::var("CLIPTAG_F32_KERNEL") {
        candidates.retain(|(kernel, _)| kernel.name() == name);
    }
    let started = std::time::Instant::now();
    let mut best: Option<(std::time::Duration, Choice)> = None;
    for choice in candidates {
        if best.is_some() && started.elapsed() > TIMING_BUDGET {
            break;
        }
        if let Some((best_time, _)) = &best {
            if time_kernel(&choice, rows, k, 1)? > *best_time * 2 {
                continue;
            }
        }
        let time = time_kernel(&choice, rows, k, 3)? + time_kernel(&choice, rows * 8, k, 2)? / 8;
        tracing::debug!(kernel = choice.0.name(), ?time, rows, k, "f32 kernel timed");
        if best.as_ref().is_none_or(|(t, _)| time < *t) {
            best = Some((time, choice));
        }
    }
    best.map(|(_, choice)| choice)
        .ok_or_else(|| format_err!("no f32 matmul kernel for k={k} n={n}"))
}

/// How long [`choose_kernel`] may spend timing candidates, per encoder.
const TIMING_BUDGET: std::time::Duration = std::time::Duration::from_millis(100);

fn pack(found: &Found, (kernel, packing): Choice) -> TractResult<PackedFloatLinear> {
    let (k, n) = (found.weights.shape()[0], found.weights.shape()[1]);
    let (a_format, _) = &kernel.packings()[packing];
    let weights = found.weights.try_as_plain_ram()?;
    let weights = weights.as_slice::<f32>()?;
    let width = block_width(n, kernel.mr());
    let mut blocks = vec![];
    for first in (0..n).step_by(width) {
        let width = width.min(n - first);
        let columns: Vec<f32> = weights
            .chunks_exact(n)
            .flat_map(|row| &row[first..first + width])
            .copied()
            .collect();
        blocks.push(FloatBlock {
            weights: a_format.prepare_one(&Tensor::from_shape(&[k, width], &columns)?, 0, 1)?,
            first,
            width,
        });
    }
    let bias = match &found.bias {
        Some(b) => Some(b.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()),
        None => None,
    };
    // Identity for tract's graph hashing: shape and a sample of the weights (hashing them
    // all would cost more than packing them).
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (k, n).hash(&mut hasher);
    for v in weights.iter().step_by((k * n / 64).max(1)) {
        v.to_bits().hash(&mut hasher);
    }
    Ok(PackedFloatLinear {
        kernel,
        packing,
        blocks,
        k,
        n,
        bias,
        fingerprint: hasher.finish(),
    })
}

/// Fuses every matching layer of a decluttered typed model; returns how many.
pub fn fuse_float_linear(model: &mut TypedModel) -> TractResult<usize> {
    let mut kernel: Option<Choice> = None;
    let mut fused = 0;
    // One layer at a time, looked for afresh after each patch: a layer's input may be the
    // previous layer's QuickGELU, which the patch replaces.
    while let Some(layer) = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<EinSum>())
        .find_map(|n| find(model, n.id))
    {
        let name = model.node(layer.last).name.clone();
        // One timing per encoder: its layers differ in shape, not in what suits the CPU.
        let choice = match &kernel {
            Some(choice) => choice.clone(),
            None => {
                let (k, n) = (layer.weights.shape()[0], layer.weights.shape()[1]);
                kernel.insert(choose_kernel(layer.rows, k, n)?).clone()
            }
        };
        let mut op = FloatLinear {
            layer: Arc::new(pack(&layer, choice)?),
            dropped_axes: layer.dropped_axes.clone(),
            reduced: layer.reduced,
            quick_gelu: None,
        };
        let mut last = layer.last;
        if let Some((alpha, product)) = find_quick_gelu(model, layer.last) {
            op.quick_gelu = Some(alpha.to_bits());
            last = product;
        }
        let mut patch = TypedModelPatch::new(format!("fuse {name}"));
        let input = patch.tap_model(model, layer.activations)?;
        let wire = patch.wire_node(format!("{name}.fused"), op, &[input])?[0];
        patch.shunt_outside(model, OutletId::new(last, 0), wire)?;
        patch.apply(model)?;
        model.compact()?;
        fused += 1;
    }
    Ok(fused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{agreement, decluttered, inputs, run};

    /// The pass on the fixture's fp32 exports at batch 2 (so `[batch, tokens, K]` inputs are
    /// flattened): every matmul by a constant is fused, and every output agrees with tract's
    /// own graph within float rounding.
    #[test]
    fn fusing_real_fp32_exports_keeps_every_output() {
        let (pixels, ids) = inputs(2);
        for (file, input) in [("vision_model.onnx", pixels), ("text_model.onnx", ids)] {
            let model = decluttered(file, &input);
            let constant_matmuls = model
                .nodes()
                .iter()
                .filter(|n| find(&model, n.id).is_some())
                .count();
            let mut fused_model = model.clone();
            let fused = fuse_float_linear(&mut fused_model).unwrap();
            assert!(fused >= 13, "{file}: only {fused} layers fused");
            assert_eq!(fused, constant_matmuls, "{file}");
            assert!(
                fused_model.nodes().iter().any(|n| n
                    .op_as::<FloatLinear>()
                    .is_some_and(|f| f.quick_gelu.is_some())),
                "{file}: no QuickGELU moved into a layer"
            );

            let want = run(model, &input);
            let got = run(fused_model, &input);
            assert_eq!(want.len(), got.len());
            for (w, g) in want.iter().zip(&got) {
                let (cosine, max_diff) = agreement(w, g);
                assert!(
                    cosine >= 0.999_999 && max_diff <= 1e-4,
                    "{file}: cosine {cosine}, max |Δ| {max_diff}"
                );
            }
        }
    }

    /// Every kernel this CPU offers, on shapes whose tokens and columns are not multiples of
    /// its tile, against a plain triple loop.
    #[test]
    fn every_kernel_matches_a_plain_product() {
        let mut next = crate::test_support::random_bits();
        let mut value = || (next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        for (m, k, n) in [(50, 37, 70), (3, 64, 200), (77, 96, 33)] {
            let xs: Vec<f32> = (0..m * k).map(|_| value()).collect();
            let ws: Vec<f32> = (0..k * n).map(|_| value()).collect();
            let bias: Vec<f32> = (0..n).map(|_| value()).collect();
            let mut want = vec![0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let dot: f64 = (0..k)
                        .map(|p| xs[i * k + p] as f64 * ws[p * n + j] as f64)
                        .sum();
                    want[i * n + j] = dot as f32 + bias[j];
                }
            }
            let found = Found {
                activations: OutletId::new(0, 0),
                weights: Tensor::from_shape(&[k, n], &ws).unwrap().into_arc_tensor(),
                bias: Some(Tensor::from_shape(&[n], &bias).unwrap().into_arc_tensor()),
                last: 0,
                dropped_axes: tvec![],
                reduced: 1,
                rows: m,
            };
            for choice in candidates(k, n) {
                let name = choice.0.name().to_string();
                let op = FloatLinear {
                    layer: Arc::new(pack(&found, choice).unwrap()),
                    dropped_axes: tvec![],
                    reduced: 1,
                    quick_gelu: None,
                };
                let input = Tensor::from_shape(&[1, m, k], &xs).unwrap();
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(2)
                    .build()
                    .unwrap();
                let eval = || {
                    let out = op
                        .eval(
                            &EvalContext::out_of_plan(),
                            tvec![input.clone().into_tvalue()],
                        )
                        .unwrap();
                    out[0]
                        .try_as_plain_ram()
                        .unwrap()
                        .as_slice::<f32>()
                        .unwrap()
                        .to_vec()
                };
                let got = eval();
                // The column blocks shared out by a pool give the same values.
                assert_eq!(got, pool.install(eval), "{name} on {m}×{k}×{n}, in a pool");
                let worst = want
                    .iter()
                    .zip(&got)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= 1e-4, "{name} on {m}×{k}×{n}: max |Δ| {worst}");
            }
        }
    }
}
