//! CLIP: image and text encoders from ONNX files, run by tract on the CPU (or, built with
//! the `cuda` feature, on an NVIDIA GPU through tract-cuda: see `device`).
//!
//! Rules:
//! - Input and output names, token id type and embedding width come from the graph; nothing
//!   assumes 512 or a particular exporter.
//! - Plans are compiled per concrete batch size and cached: tract runs symbolic batch
//!   dimensions much slower. The text sequence length is fixed to the context length.
//! - Files are loaded with `with_ignore_value_info(true)`: quantized exports carry symbolic
//!   value_info that otherwise fails analysis once the input facts are concrete.
//! - Every embedding leaves this module L2-normalised.
//! - The model id is a content hash of the two ONNX files, so a changed model is noticed.
//! - Our graph passes, their kernels and the pool a run goes on are `cliptag_tract`'s: this
//!   module only applies its pass lists, per stage (`Encoder::typed`, `cpu_plan`), so the
//!   passes build and test without GStreamer or SQLite.

pub mod check;
pub mod device;
mod layout;
pub mod options;
mod preprocess;
pub mod quantize_dir;
mod tokenizer;
mod window_pixels;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cliptag_tract::{passes, pool};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::{RunOptions, Runnable};
use tract_onnx::tract_core::transform::{build_float_translator, NodeFilter};
use tract_onnx::tract_hir::infer::Factoid;

pub use device::Device;
pub use layout::{detect, locate, Layout, ModelSpec};
pub use options::{DeviceChoice, LayoutChoice, ModelSettings, ModelVariant};
pub use preprocess::{
    center_crop, preprocess, resize, CropRounding, Filter, PreprocessConfig, ResizeMode,
};
pub use tokenizer::{open_clip_clean, ClipTokenizer, TextCleaning};
pub use window_pixels::{super_image, window_pixels};

use crate::Disposition;

/// Largest batch handed to tract at once; bigger requests are split.
pub const MAX_BATCH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("model directory {dir}: missing {what} (expected {path})")]
    MissingFile {
        dir: PathBuf,
        what: String,
        path: PathBuf,
    },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("model {path}: tract cannot use this ONNX graph: {reason}")]
    Onnx { path: PathBuf, reason: String },
    #[error("model directory {dir}: {reason}")]
    Mismatch { dir: PathBuf, reason: String },
    #[error("inference failed in {path}: {reason}")]
    Inference { path: PathBuf, reason: String },
    #[error("cannot tokenize {text:?}: {reason}")]
    Tokenize { text: String, reason: String },
    #[error("device \"{device}\" is not usable here: {reason} (device = \"auto\" or \"cpu\" runs on the CPU)")]
    DeviceUnavailable { device: String, reason: String },
}

impl ClipError {
    pub fn disposition(&self) -> Disposition {
        match self {
            ClipError::Tokenize { .. } => Disposition::Skip,
            _ => Disposition::Stop,
        }
    }
}

fn format_err(e: &TractError) -> String {
    // tract chains contexts; the whole chain says which node and why.
    format!("{e:#}").replace('\n', "; ")
}

/// One ONNX encoder with a plan per batch size.
struct Encoder {
    path: PathBuf,
    /// The graph typed and decluttered once, with the batch left as `batch_symbol` and the
    /// int8 layers fused: every batch size's plan starts from it, so the weights are read,
    /// typed and packed once. The ONNX model itself is dropped after load.
    typed: TypedModel,
    batch_symbol: Option<Symbol>,
    inputs: Vec<InputKind>,
    /// Element type of each input, in graph order.
    input_types: Vec<DatumType>,
    /// The shape of one item (without the batch dimension).
    item_shape: Vec<usize>,
    /// Some(n) when the graph fixes the batch dimension.
    fixed_batch: Option<usize>,
    output_name: String,
    dim: usize,
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
struct Expectation<'a> {
    input: &'a str,
    output: &'a str,
    types: &'a [DatumType],
    item_shape: Vec<usize>,
    half: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputKind {
    Main,
    AttentionMask,
}

impl Encoder {
    fn load(
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
    fn typed(
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

    fn plan(&self, batch: usize) -> Result<Arc<dyn Runnable>, ClipError> {
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
        crate::release_free_memory();
        Ok(plan)
    }

    /// tract's optimisation, then our passes over the optimised graph.
    fn cpu_plan(&self, typed: TypedModel, batch: usize) -> TractResult<Arc<dyn Runnable>> {
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
    fn input_type_of(&self, kind: InputKind) -> DatumType {
        self.inputs
            .iter()
            .position(|k| *k == kind)
            .map(|ix| self.input_types[ix])
            .unwrap_or(DatumType::I64)
    }

    /// `main`: the batch's main input, flattened. Returns normalised rows.
    fn run(
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
    fn chunks(&self, n: usize) -> Vec<std::ops::Range<usize>> {
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

pub fn l2_normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// The image side of CLIP as the rest of the pipeline sees it: preprocessed tensors in,
/// normalised embeddings out, one entry per tensor. A seam so tests can count calls with
/// the real encoder underneath.
pub trait ImageEmbedder {
    fn embed_pixels(&self, tensors: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ClipError>;
}

impl ImageEmbedder for ClipModel {
    fn embed_pixels(&self, tensors: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ClipError> {
        ClipModel::embed_pixels(self, tensors)
    }
}

impl<T: ImageEmbedder + ?Sized> ImageEmbedder for &T {
    fn embed_pixels(&self, tensors: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ClipError> {
        (**self).embed_pixels(tensors)
    }
}

/// Token ids and the normalised embedding of one text.
pub type EncodedText = (Vec<u32>, Vec<f32>);

/// A loaded CLIP model: both encoders, its tokenizer and its preprocessing recipe.
pub struct ClipModel {
    pub id: String,
    pub dir: PathBuf,
    pub spec: ModelSpec,
    pub preprocess: PreprocessConfig,
    pub tokenizer: ClipTokenizer,
    pub embedding_dim: usize,
    pub load_time: Duration,
    image: Encoder,
    /// The text tower: loaded with the model or on first use (`TextTower`), and dropped by
    /// `release_text_encoder` once labels are embedded, since a daemon needs it only then.
    text: Mutex<Option<Arc<Encoder>>>,
    /// What the text file was when the model id was computed: a tower loaded later must be
    /// the same file, or its embeddings would be stored under the wrong model.
    text_stamp: Option<FileStamp>,
    options: RunOptions,
    /// Where both towers run.
    pub device: Device,
}

/// When `ClipModel::load_with` loads the text tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextTower {
    /// With the vision tower, in parallel.
    Now,
    /// On the first `embed_texts`: a daemon whose labels are all in its database's cache
    /// never needs it.
    WhenNeeded,
}

/// A file's size and modification time.
type FileStamp = (u64, Option<std::time::SystemTime>);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

impl std::fmt::Debug for ClipModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipModel")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .field("embedding_dim", &self.embedding_dim)
            .finish()
    }
}

/// Hex SHA-256 of the concatenated files (the first 16 bytes: plenty to tell models apart).
pub fn hash_files(paths: &[&Path]) -> Result<String, ClipError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in paths {
        let bad = |e: std::io::Error| ClipError::BadFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let mut f = std::fs::File::open(path).map_err(bad)?;
        loop {
            let n = f.read(&mut buf).map_err(bad)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    let digest = hasher.finalize();
    Ok(digest.iter().take(16).map(|b| format!("{b:02x}")).collect())
}

fn load_text_encoder(
    spec: &ModelSpec,
    options: RunOptions,
    device: Device,
) -> Result<Encoder, ClipError> {
    let (_, input) = spec.layout.input_names();
    let (_, output) = spec.layout.output_names();
    Encoder::load(
        &spec.text,
        Expectation {
            input,
            output,
            types: &[DatumType::I64, DatumType::I32],
            item_shape: vec![spec.context_length],
            half: spec.variant == ModelVariant::Fp16,
        },
        options,
        device,
    )
}

fn check_widths(dir: &Path, image: usize, text: usize) -> Result<(), ClipError> {
    if image == text {
        return Ok(());
    }
    Err(ClipError::Mismatch {
        dir: dir.to_path_buf(),
        reason: format!("image embeddings are {image} wide but text embeddings {text}"),
    })
}

/// The id a model's embeddings are stored under: a hash of its two ONNX files, computed
/// without loading them into tract.
pub fn model_id(
    dir: &Path,
    variant: ModelVariant,
    layout: Option<Layout>,
) -> Result<String, ClipError> {
    let spec = locate(dir, variant, layout)?;
    hash_files(&[&spec.vision, &spec.text])
}

impl ClipModel {
    /// Load a model directory on the CPU, detecting its layout.
    pub fn load(dir: &Path, variant: ModelVariant, threads: usize) -> Result<ClipModel, ClipError> {
        ClipModel::load_with(&ModelSettings::cpu(dir, variant, threads), TextTower::Now)
    }

    /// Load the model `settings` name; `text_tower` says when its text tower loads.
    pub fn load_with(
        settings: &ModelSettings,
        text_tower: TextTower,
    ) -> Result<ClipModel, ClipError> {
        let started = Instant::now();
        let dir = settings.dir.as_path();
        let device = device::resolve(settings.device)?;
        let spec = locate(
            dir,
            device.variant(settings.variant),
            settings.layout.forced(),
        )?;
        let tokenizer = ClipTokenizer::from_file(
            &spec.tokenizer,
            spec.context_length,
            &spec.pad_token,
            spec.layout.text_cleaning(),
        )
        .map_err(|reason| ClipError::BadFile {
            path: spec.tokenizer.clone(),
            reason,
        })?;

        let options = pool::run_options(settings.threads);
        let half = spec.variant == ModelVariant::Fp16;
        let (h, w) = spec.preprocess.output_size();
        let (image_input, _) = spec.layout.input_names();
        let (image_output, _) = spec.layout.output_names();
        let text_stamp = file_stamp(&spec.text);
        let image_types: &[DatumType] = if half {
            &[DatumType::F16, DatumType::F32]
        } else {
            &[DatumType::F32]
        };
        // The towers load and optimise on separate threads, and the files are hashed for
        // the model id beside them: loading is mostly single-threaded graph rewriting.
        let (image, text, id) = std::thread::scope(|scope| {
            let text = scope.spawn(|| {
                let text = match text_tower {
                    TextTower::Now => Some(load_text_encoder(&spec, options.clone(), device)),
                    TextTower::WhenNeeded => None,
                };
                let id = hash_files(&[&spec.vision, &spec.text]);
                (text, id)
            });
            let image = Encoder::load(
                &spec.vision,
                Expectation {
                    input: image_input,
                    output: image_output,
                    types: image_types,
                    item_shape: vec![3, h as usize, w as usize],
                    half,
                },
                options.clone(),
                device,
            );
            let (text, id) = text
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (image, text, id)
        });
        let (image, text, id) = (image?, text.transpose()?, id?);
        crate::release_free_memory();
        if let Some(text) = &text {
            check_widths(dir, image.dim, text.dim)?;
        }
        Ok(ClipModel {
            id,
            dir: dir.to_path_buf(),
            preprocess: spec.preprocess.clone(),
            spec,
            tokenizer,
            embedding_dim: image.dim,
            load_time: started.elapsed(),
            image,
            text: Mutex::new(text.map(Arc::new)),
            text_stamp,
            options,
            device,
        })
    }

    /// The text tower, loaded now if it is not loaded.
    fn text_encoder(&self) -> Result<Arc<Encoder>, ClipError> {
        let mut slot = self.text.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(text) = &*slot {
            return Ok(text.clone());
        }
        if file_stamp(&self.spec.text) != self.text_stamp {
            return Err(ClipError::Mismatch {
                dir: self.dir.clone(),
                reason: format!(
                    "{} changed on disk after the model was loaded; restart to load the new model",
                    self.spec.text.display()
                ),
            });
        }
        let started = Instant::now();
        let text = load_text_encoder(&self.spec, self.options.clone(), self.device)?;
        check_widths(&self.dir, self.embedding_dim, text.dim)?;
        tracing::debug!(
            load_ms = started.elapsed().as_millis() as u64,
            "text tower loaded"
        );
        let text = Arc::new(text);
        *slot = Some(text.clone());
        Ok(text)
    }

    /// Drops the text tower (about a third of a model's memory) until texts are embedded
    /// again, when it is loaded from the same file.
    pub fn release_text_encoder(&self) {
        let released = self.text.lock().unwrap_or_else(|p| p.into_inner()).take();
        if released.is_some() {
            drop(released);
            crate::release_free_memory();
            tracing::debug!("text tower released");
        }
    }

    /// What the two graphs declare: (vision, text). Loads the text tower if needed.
    pub fn graph_info(&self) -> Result<(GraphInfo, GraphInfo), ClipError> {
        Ok((self.image.info.clone(), self.text_encoder()?.info.clone()))
    }

    /// Preprocess and embed frames.
    pub fn embed_frames(
        &self,
        images: &[&crate::ingest::RgbImage],
    ) -> Result<Vec<Vec<f32>>, ClipError> {
        let tensors: Vec<Vec<f32>> = images
            .iter()
            .map(|img| preprocess(img, &self.preprocess))
            .collect();
        self.embed_pixels(&tensors)
    }

    /// Embed already preprocessed `[3, H, W]` tensors.
    pub fn embed_pixels(&self, tensors: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ClipError> {
        let item: usize = self.image.item_shape.iter().product();
        let mut out = Vec::with_capacity(tensors.len());
        for range in self.image.chunks(tensors.len()) {
            let batch = range.len();
            let mut data = Vec::with_capacity(batch * item);
            for t in &tensors[range] {
                if t.len() != item {
                    return Err(ClipError::Inference {
                        path: self.image.path.clone(),
                        reason: format!("pixel tensor has {} values, expected {item}", t.len()),
                    });
                }
                data.extend_from_slice(t);
            }
            let mut shape = vec![batch];
            shape.extend_from_slice(&self.image.item_shape);
            let tensor = Tensor::from_shape(&shape, &data).map_err(|e| ClipError::Inference {
                path: self.image.path.clone(),
                reason: format_err(&e),
            })?;
            out.extend(self.image.run(batch, tensor, None)?);
        }
        Ok(out)
    }

    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, ClipError> {
        self.tokenizer
            .encode(text)
            .map_err(|reason| ClipError::Tokenize {
                text: text.to_string(),
                reason,
            })
    }

    /// Embed captions; returns (ids, normalised embedding) per text.
    pub fn embed_texts(&self, texts: &[String]) -> Result<Vec<EncodedText>, ClipError> {
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<_, _>>()?;
        let ctx = self.tokenizer.context_length();
        let pad = self.tokenizer.pad_id();
        let text = self.text_encoder()?;
        let mut out = Vec::with_capacity(texts.len());
        for range in text.chunks(texts.len()) {
            let batch = range.len();
            let rows = &ids[range.clone()];
            let flat: Vec<u32> = rows.iter().flatten().copied().collect();
            // Real tokens, the first end token included, attend; padding after it does not.
            let mask: Vec<i64> = rows
                .iter()
                .flat_map(|r| {
                    let end = r
                        .iter()
                        .skip(1)
                        .position(|&t| t == pad)
                        .map(|p| p + 1)
                        .unwrap_or(r.len() - 1);
                    (0..r.len()).map(move |i| (i <= end) as i64)
                })
                .collect();
            let shape = [batch, ctx];
            let make = |r: TractResult<Tensor>| {
                r.map_err(|e| ClipError::Inference {
                    path: text.path.clone(),
                    reason: format_err(&e),
                })
            };
            let main = match text.input_type_of(InputKind::Main) {
                DatumType::I32 => make(Tensor::from_shape(
                    &shape,
                    &flat.iter().map(|&t| t as i32).collect::<Vec<_>>(),
                ))?,
                _ => make(Tensor::from_shape(
                    &shape,
                    &flat.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                ))?,
            };
            let mask = if text.inputs.contains(&InputKind::AttentionMask) {
                let dt = text.input_type_of(InputKind::AttentionMask);
                let mask = make(Tensor::from_shape(&shape, &mask))?;
                Some(make(mask.cast_to_dt(dt).map(|t| t.into_owned()))?)
            } else {
                None
            };
            let embeddings = text.run(batch, main, mask)?;
            out.extend(rows.iter().cloned().zip(embeddings));
        }
        Ok(out)
    }
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
