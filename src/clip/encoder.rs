//! One ONNX encoder under tract: its graph read, checked against what the layout expects,
//! typed and decluttered once with a symbolic batch, and one compiled plan per batch size.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cliptag_tract::{passes, pool};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::{RunOptions, Runnable};
use tract_onnx::tract_core::transform::{build_float_translator, NodeFilter};
use tract_onnx::tract_hir::infer::Factoid;

use super::device::{self, Device};
use super::error::{format_err, ClipError};
use super::vectors::l2_normalized;

/// Largest batch handed to tract at once; bigger requests are split.
pub const MAX_BATCH: usize = 8;

/// One ONNX encoder with a plan per batch size.
pub(super) struct Encoder {
    pub(super) path: PathBuf,
    /// The graph typed and decluttered once, with the batch left as `batch_symbol` and the
    /// int8 layers fused: every batch size's plan starts from it, so the weights are read,
    /// typed and packed once. The ONNX model itself is dropped after load.
    typed: TypedModel,
    batch_symbol: Option<Symbol>,
    pub(super) inputs: Vec<InputKind>,
    /// Element type of each input, in graph order.
    input_types: Vec<DatumType>,
    /// The shape of one item (without the batch dimension).
    pub(super) item_shape: Vec<usize>,
    /// Some(n) when the graph fixes the batch dimension.
    fixed_batch: Option<usize>,
    output_name: String,
    pub(super) dim: usize,
    plans: Mutex<HashMap<usize, Arc<dyn Runnable>>>,
    options: RunOptions,
    device: Device,
    pub info: GraphInfo,
}

/// What a graph declares, for `model check`.
#[derive(Debug, Clone, Default)]
pub struct GraphInfo {
    /// (name, element type, shape) as declared; `?` for unknown dimensions.
    pub inputs: Vec<(String, String, String)>,
    pub outputs: Vec<(String, String, String)>,
    /// The graph holds integer-quantized operators (MatMulInteger, ConvInteger, QLinear*).
    pub int8: bool,
    pub nodes: usize,
}

fn describe_fact(fact: &InferenceFact) -> (String, String) {
    let dt = fact
        .datum_type
        .concretize()
        .map(|d| format!("{d:?}"))
        .unwrap_or_else(|| "?".into());
    let shape = match fact.shape.concretize() {
        Some(dims) => format!(
            "[{}]",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "?".into(),
    };
    (dt, shape)
}

/// What an encoder expects of its graph.
pub(super) struct Expectation<'a> {
    pub input: &'a str,
    pub output: &'a str,
    /// Element types the main input may have.
    pub types: &'a [DatumType],
    /// One item's shape, without the batch dimension.
    pub item_shape: Vec<usize>,
    /// fp16 weights, widened to f32 at load.
    pub half: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InputKind {
    Main,
    AttentionMask,
}

impl Encoder {
    pub(super) fn load(
        path: &Path,
        expect: Expectation<'_>,
        options: RunOptions,
        device: Device,
    ) -> Result<Encoder, ClipError> {
        let onnx_err = |reason: String| ClipError::Onnx {
            path: path.to_path_buf(),
            reason,
        };
        let model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_path(path)
            .map_err(|e| onnx_err(format_err(&e)))?;
        let mut info = GraphInfo {
            nodes: model.nodes().len(),
            ..Default::default()
        };
        info.int8 = model.nodes().iter().any(|n| {
            let op = n.op.name();
            op.contains("Integer") || op.starts_with("QLinear") || op.contains("QuantizeLinear")
        });
        let item_shape = expect.item_shape;
        let mut inputs = Vec::new();
        let mut input_type = None;
        let mut fixed_batch = None;
        for (ix, outlet) in model
            .input_outlets()
            .map_err(|e| onnx_err(format_err(&e)))?
            .iter()
            .enumerate()
        {
            let name = model.node(outlet.node).name.clone();
            let fact = model.input_fact(ix).map_err(|e| onnx_err(format_err(&e)))?;
            let (dt, shape) = describe_fact(fact);
            info.inputs.push((name.clone(), dt, shape));
            if name == "attention_mask" {
                inputs.push(InputKind::AttentionMask);
                continue;
            }
            if name != expect.input {
                return Err(onnx_err(format!(
                    "input is named {name:?}, expected {:?}",
                    expect.input
                )));
            }
            inputs.push(InputKind::Main);
            input_type = fact.datum_type.concretize();
            if let Some(dt) = input_type {
                if !expect.types.contains(&dt) {
                    return Err(onnx_err(format!(
                        "input {name:?} has element type {dt:?}, expected {}",
                        expect
                            .types
                            .iter()
                            .map(|t| format!("{t:?}"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    )));
                }
            }
            if let Some(rank) = fact.shape.rank().concretize() {
                if rank as usize != item_shape.len() + 1 {
                    return Err(onnx_err(format!(
                        "input {name:?} has rank {rank}, expected {} ([batch, {}])",
                        item_shape.len() + 1,
                        item_shape
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
            let dims: Vec<Option<i64>> = fact
                .shape
                .dims()
                .map(|d| d.concretize().and_then(|d| d.to_i64().ok()))
                .collect();
            if let Some(Some(b)) = dims.first() {
                fixed_batch = Some(*b as usize);
            }
            for (axis, (declared, wanted)) in dims.iter().skip(1).zip(&item_shape).enumerate() {
                if let Some(declared) = declared {
                    if *declared as usize != *wanted {
                        return Err(onnx_err(format!(
                            "input {name:?} fixes axis {} to {declared}, but the configs give {wanted} (preprocessing size or context length)",
                            axis + 1
                        )));
                    }
                }
            }
        }
        if !inputs.contains(&InputKind::Main) {
            return Err(onnx_err(format!(
                "graph has no input named {:?}",
                expect.input
            )));
        }
        let input_type = input_type.unwrap_or(expect.types[0]);

        let outlets = model
            .output_outlets()
            .map_err(|e| onnx_err(format_err(&e)))?
            .to_vec();
        for o in &outlets {
            let name = model
                .outlet_label(*o)
                .map(str::to_string)
                .unwrap_or_else(|| model.node(o.node).name.clone());
            let (dt, shape) = model
                .outlet_fact(*o)
                .map(describe_fact)
                .unwrap_or_else(|_| ("?".into(), "?".into()));
            info.outputs.push((name, dt, shape));
        }
        if !info.outputs.iter().any(|(n, _, _)| n == expect.output) {
            return Err(onnx_err(format!(
                "no output named {:?} (outputs: {})",
                expect.output,
                info.outputs
                    .iter()
                    .map(|o| o.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let output_name = expect.output.to_string();
        let half = expect.half;
        let input_types = inputs
            .iter()
            .enumerate()
            .map(|(ix, kind)| match kind {
                InputKind::Main => input_type,
                // Masks default to int64, as the exporters write them.
                InputKind::AttentionMask => model
                    .input_fact(ix)
                    .ok()
                    .and_then(|f| f.datum_type.concretize())
                    .unwrap_or(DatumType::I64),
            })
            .collect::<Vec<_>>();

        let batch_symbol = fixed_batch
            .is_none()
            .then(|| model.symbols.sym("cliptag_batch"));
        let batch: TDim = match &batch_symbol {
            Some(symbol) => symbol.clone().into(),
            None => fixed_batch.unwrap_or(1).into(),
        };
        let typed = Self::typed(
            model,
            &input_types,
            &batch,
            &item_shape,
            &output_name,
            half,
            device,
        )
        .map_err(|e| onnx_err(format_err(&e)))?;

        let mut encoder = Encoder {
            path: path.to_path_buf(),
            typed,
            batch_symbol,
            inputs,
            input_types,
            item_shape,
            fixed_batch,
            output_name,
            dim: 0,
            plans: Mutex::new(HashMap::new()),
            options,
            device,
            info,
        };
        let plan = encoder.plan(1)?;
        let fact = plan.output_fact(0).map_err(|e| onnx_err(format_err(&e)))?;
        let shape = fact
            .shape
            .as_concrete()
            .ok_or_else(|| onnx_err("output shape is not concrete".into()))?
            .to_vec();
        // With value_info ignored the file declares no output shapes; report the typed one.
        let typed = (
            format!("{:?}", fact.datum_type),
            format!("[batch, {}]", shape.get(1).copied().unwrap_or(0)),
        );
        for out in encoder
            .info
            .outputs
            .iter_mut()
            .filter(|o| o.0 == encoder.output_name)
        {
            (out.1, out.2) = typed.clone();
        }
        encoder.dim = match shape.as_slice() {
            [1, d] => *d,
            other => {
                return Err(onnx_err(format!(
                    "output {:?} has shape {other:?}, expected [batch, width]",
                    encoder.output_name
                )))
            }
        };
        Ok(encoder)
    }

    /// Types the graph for `batch` (a symbol, or the graph's fixed batch), declutters it and,
    /// for the CPU, fuses its int8 layers and attention cores.
    pub(super) fn typed(
        mut model: InferenceModel,
        input_types: &[DatumType],
        batch: &TDim,
        item_shape: &[usize],
        output_name: &str,
        half: bool,
        device: Device,
    ) -> TractResult<TypedModel> {
        for (ix, dt) in input_types.iter().enumerate() {
            let mut shape: TVec<TDim> = tvec![batch.clone()];
            shape.extend(item_shape.iter().map(|d| d.to_dim()));
            model.set_input_fact(ix, InferenceFact::dt_shape(*dt, shape))?;
        }
        model.select_outputs_by_name([output_name])?;
        let mut typed = model.into_typed()?;
        if half {
            // tract runs f16 slowly on most CPUs; the weights widen once, at load.
            typed = build_float_translator(DatumType::F16, DatumType::F32, NodeFilter::default())
                .transform_into(typed)?;
        }
        let mut typed = typed.into_decluttered()?;
        if device == Device::Cuda {
            // Our fused operators are CPU kernels: tract-cuda would leave them on the host.
            return Ok(typed);
        }
        // The int8 layers are fused while the graph still reads as onnxruntime wrote it.
        // CLIPTAG_GRAPH_PASSES turns passes off, to measure them.
        cliptag_tract::apply_decluttered(&mut typed, &passes::enabled(cliptag_tract::DECLUTTERED))?;
        Ok(typed)
    }

    pub(super) fn plan(&self, batch: usize) -> Result<Arc<dyn Runnable>, ClipError> {
        if let Some(plan) = self.plans.lock().ok().and_then(|p| p.get(&batch).cloned()) {
            return Ok(plan);
        }
        let onnx_err = |reason: String| ClipError::Onnx {
            path: self.path.clone(),
            reason,
        };
        let typed = match &self.batch_symbol {
            Some(symbol) => self
                .typed
                .set_symbols(&HashMap::from([(symbol.clone(), TDim::Val(batch as i64))])),
            None => Ok(self.typed.clone()),
        };
        let plan = match self.device {
            Device::Cuda => typed.and_then(|m| device::prepare_cuda(m, &self.options)),
            Device::Cpu => typed.and_then(|m| self.cpu_plan(m, batch)),
        }
        .map_err(|e| onnx_err(format_err(&e)))?;
        if let Ok(mut plans) = self.plans.lock() {
            plans.insert(batch, plan.clone());
        }
        crate::memory::release_free_memory();
        Ok(plan)
    }

    /// tract's optimisation, then our passes over the optimised graph.
    pub(super) fn cpu_plan(
        &self,
        typed: TypedModel,
        batch: usize,
    ) -> TractResult<Arc<dyn Runnable>> {
        let passes = passes::enabled(cliptag_tract::OPTIMIZED);
        let mut optimized = typed.into_optimized()?;
        // The passes' debug lines say which file and plan they were for.
        tracing::debug_span!("plan", path = %self.path.display(), batch)
            .in_scope(|| cliptag_tract::apply_optimized(&mut optimized, &passes))?;
        Ok(Arc::new(
            optimized.into_runnable_with_options(&self.options)?,
        ))
    }

    /// The element type the graph takes for an input of this kind.
    pub(super) fn input_type_of(&self, kind: InputKind) -> DatumType {
        self.inputs
            .iter()
            .position(|k| *k == kind)
            .map(|ix| self.input_types[ix])
            .unwrap_or(DatumType::I64)
    }

    /// `main`: the batch's main input, flattened. Returns normalised rows.
    pub(super) fn run(
        &self,
        batch: usize,
        main: Tensor,
        mask: Option<Tensor>,
    ) -> Result<Vec<Vec<f32>>, ClipError> {
        let infer_err = |reason: String| ClipError::Inference {
            path: self.path.clone(),
            reason,
        };
        let plan = self.plan(batch)?;
        let mut inputs: Vec<Tensor> = vec![];
        let mut main = Some(main);
        let mut mask = mask;
        for kind in &self.inputs {
            let t = match kind {
                InputKind::Main => main.take(),
                InputKind::AttentionMask => mask.take(),
            };
            inputs.push(t.ok_or_else(|| infer_err("missing input".into()))?);
        }
        let run = move || -> TractResult<Tensor> {
            let inputs: TVec<TValue> = inputs.into_iter().map(TValue::from).collect();
            let mut out = device::run_guarded(&*plan, inputs)?;
            Ok(out.remove(0).into_tensor())
        };
        // On the CPU the whole graph runs on one of the pool's threads, with the others kept
        // awake (`cliptag_tract::pool`). On the GPU the pool would only spin while the
        // device works.
        let out = match self.device {
            Device::Cpu => pool::run_on_pool(&self.options, run),
            Device::Cuda => run(),
        }
        .map_err(|e| infer_err(format_err(&e)))?;
        let view = out
            .to_plain_array_view::<f32>()
            .map_err(|e| infer_err(format_err(&e)))?;
        let rows: Vec<Vec<f32>> = view
            .outer_iter()
            .map(|r| l2_normalized(r.iter().copied().collect()))
            .collect();
        if rows.len() != batch {
            return Err(infer_err(format!(
                "got {} rows for a batch of {batch}",
                rows.len()
            )));
        }
        Ok(rows)
    }

    /// Splits `n` items into the batch sizes to run: the graph's fixed batch, else powers of
    /// two up to [`MAX_BATCH`] (7 items run as 4 + 2 + 1). Every batch size has its own
    /// compiled plan with its own packed weights, so a daemon batching windows of varying
    /// size across sources keeps at most four plans instead of growing to eight.
    pub(super) fn chunks(&self, n: usize) -> Vec<std::ops::Range<usize>> {
        split_batches(n, self.fixed_batch)
    }
}

fn split_batches(n: usize, fixed_batch: Option<usize>) -> Vec<std::ops::Range<usize>> {
    if let Some(step) = fixed_batch {
        let step = step.max(1);
        return (0..n).step_by(step).map(|s| s..(s + step).min(n)).collect();
    }
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < n {
        let left = n - start;
        let size = if left >= MAX_BATCH {
            MAX_BATCH
        } else {
            1 << (usize::BITS - 1 - left.leading_zeros())
        };
        ranges.push(start..start + size);
        start += size;
    }
    ranges
}

#[cfg(test)]
mod batch_tests {
    #[test]
    fn batches_are_powers_of_two_up_to_the_maximum() {
        let sizes = |n| {
            super::split_batches(n, None)
                .into_iter()
                .map(|r| r.len())
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(7), [4, 2, 1]);
        assert_eq!(sizes(8), [8]);
        assert_eq!(sizes(21), [8, 8, 4, 1]);
        let fixed: Vec<_> = super::split_batches(3, Some(1));
        assert_eq!(fixed, [0..1, 1..2, 2..3]);
    }
}
