//! CLIP: image and text encoders from ONNX files, run by tract on the CPU.
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

mod preprocess;
mod tokenizer;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;
use tract_onnx::tract_hir::infer::Factoid;

pub use preprocess::{center_crop, preprocess, resize, Filter, PreprocessConfig};
pub use tokenizer::ClipTokenizer;

use crate::config::ModelVariant;
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
    model: InferenceModel,
    inputs: Vec<InputKind>,
    input_type: DatumType,
    /// The shape of one item (without the batch dimension).
    item_shape: Vec<usize>,
    /// Some(n) when the graph fixes the batch dimension.
    fixed_batch: Option<usize>,
    output_name: String,
    dim: usize,
    plans: Mutex<HashMap<usize, Arc<TypedRunnableModel>>>,
    options: RunOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputKind {
    Main,
    AttentionMask,
}

impl Encoder {
    fn load(
        path: &Path,
        preferred_outputs: &[&str],
        item_shape: Vec<usize>,
        options: RunOptions,
    ) -> Result<Encoder, ClipError> {
        let onnx_err = |reason: String| ClipError::Onnx {
            path: path.to_path_buf(),
            reason,
        };
        let model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_path(path)
            .map_err(|e| onnx_err(format_err(&e)))?;
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
            if name == "attention_mask" {
                inputs.push(InputKind::AttentionMask);
                continue;
            }
            if !inputs.is_empty() && inputs.contains(&InputKind::Main) {
                return Err(onnx_err(format!("unexpected extra input {name:?}")));
            }
            inputs.push(InputKind::Main);
            input_type = fact.datum_type.concretize();
            if let Some(shape) = fact.shape.concretize() {
                if let Some(b) = shape.first().and_then(|d| d.to_i64().ok()) {
                    fixed_batch = Some(b as usize);
                }
                let rank = shape.len();
                if rank != item_shape.len() + 1 {
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
        }
        if !inputs.contains(&InputKind::Main) {
            return Err(onnx_err("graph has no input".into()));
        }
        let input_type = input_type.unwrap_or(DatumType::F32);

        let outputs: Vec<String> = model
            .output_outlets()
            .map_err(|e| onnx_err(format_err(&e)))?
            .iter()
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| model.node(o.node).name.clone())
            })
            .collect();
        let output_name = preferred_outputs
            .iter()
            .find(|p| outputs.iter().any(|o| o == *p))
            .map(|s| s.to_string())
            .ok_or_else(|| {
                onnx_err(format!(
                    "no output named {} (outputs: {})",
                    preferred_outputs.join(" or "),
                    outputs.join(", ")
                ))
            })?;

        let mut encoder = Encoder {
            path: path.to_path_buf(),
            model,
            inputs,
            input_type,
            item_shape,
            fixed_batch,
            output_name,
            dim: 0,
            plans: Mutex::new(HashMap::new()),
            options,
        };
        let plan = encoder.plan(1)?;
        let fact = plan
            .model()
            .output_fact(0)
            .map_err(|e| onnx_err(format_err(&e)))?;
        let shape = fact
            .shape
            .as_concrete()
            .ok_or_else(|| onnx_err("output shape is not concrete".into()))?
            .to_vec();
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

    fn plan(&self, batch: usize) -> Result<Arc<TypedRunnableModel>, ClipError> {
        if let Some(plan) = self.plans.lock().ok().and_then(|p| p.get(&batch).cloned()) {
            return Ok(plan);
        }
        let onnx_err = |reason: String| ClipError::Onnx {
            path: self.path.clone(),
            reason,
        };
        let mut model = self.model.clone();
        let mut shape = vec![batch];
        shape.extend_from_slice(&self.item_shape);
        for (ix, kind) in self.inputs.iter().enumerate() {
            let dt = match kind {
                InputKind::Main => self.input_type,
                InputKind::AttentionMask => model
                    .input_fact(ix)
                    .ok()
                    .and_then(|f| f.datum_type.concretize())
                    .unwrap_or(DatumType::I64),
            };
            model
                .set_input_fact(ix, InferenceFact::dt_shape(dt, &shape))
                .map_err(|e| onnx_err(format_err(&e)))?;
        }
        model
            .select_outputs_by_name([self.output_name.as_str()])
            .map_err(|e| onnx_err(format_err(&e)))?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable_with_options(&self.options))
            .map_err(|e| onnx_err(format_err(&e)))?;
        if let Ok(mut plans) = self.plans.lock() {
            plans.insert(batch, plan.clone());
        }
        Ok(plan)
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
        let mut inputs: TVec<TValue> = tvec!();
        let mut main = Some(main);
        let mut mask = mask;
        for kind in &self.inputs {
            let t = match kind {
                InputKind::Main => main.take(),
                InputKind::AttentionMask => mask.take(),
            };
            inputs.push(t.ok_or_else(|| infer_err("missing input".into()))?.into());
        }
        let out = plan.run(inputs).map_err(|e| infer_err(format_err(&e)))?;
        let view = out[0]
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

    /// Splits `n` items into the batch sizes to run: the graph's fixed batch, else up to
    /// [`MAX_BATCH`].
    fn chunks(&self, n: usize) -> Vec<std::ops::Range<usize>> {
        let step = self.fixed_batch.unwrap_or(MAX_BATCH).max(1);
        (0..n).step_by(step).map(|s| s..(s + step).min(n)).collect()
    }
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

/// What `load` found, for `model check` and logs.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub vision: PathBuf,
    pub text: PathBuf,
    pub tokenizer: PathBuf,
    pub preprocessor: PathBuf,
}

/// Token ids and the normalised embedding of one text.
pub type EncodedText = (Vec<u32>, Vec<f32>);

/// A loaded CLIP model: both encoders, its tokenizer and its preprocessing recipe.
pub struct ClipModel {
    pub id: String,
    pub dir: PathBuf,
    pub files: ModelFiles,
    pub preprocess: PreprocessConfig,
    pub tokenizer: ClipTokenizer,
    pub embedding_dim: usize,
    pub load_time: Duration,
    image: Encoder,
    text: Encoder,
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

fn require(dir: &Path, rel: &str, what: &str) -> Result<PathBuf, ClipError> {
    let path = dir.join(rel);
    if path.is_file() {
        Ok(path)
    } else {
        Err(ClipError::MissingFile {
            dir: dir.to_path_buf(),
            what: what.to_string(),
            path,
        })
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, ClipError> {
    let text = std::fs::read_to_string(path).map_err(|e| ClipError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ClipError::BadFile {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

fn hash_files(paths: &[&Path]) -> Result<String, ClipError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in paths {
        let mut f = std::fs::File::open(path).map_err(|e| ClipError::BadFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        loop {
            let n = f.read(&mut buf).map_err(|e| ClipError::BadFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    let digest = hasher.finalize();
    Ok(digest.iter().take(16).map(|b| format!("{b:02x}")).collect())
}

/// The thread pool tract's matrix products use; `threads == 0` means one per core.
fn run_options(threads: usize) -> RunOptions {
    let threads = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    };
    let mut options = RunOptions::default();
    if threads > 1 {
        options.executor = Some(tract_linalg::multithread::Executor::multithread_with_name(
            threads,
            "cliptag-clip",
        ));
    }
    options
}

/// The id a model's embeddings are stored under: a hash of its two ONNX files, computed
/// without loading them into tract.
pub fn model_id(dir: &Path, variant: ModelVariant) -> Result<String, ClipError> {
    let suffix = variant.file_suffix();
    let vision = require(
        dir,
        &format!("onnx/vision_model{suffix}.onnx"),
        "the vision encoder",
    )?;
    let text = require(
        dir,
        &format!("onnx/text_model{suffix}.onnx"),
        "the text encoder",
    )?;
    hash_files(&[&vision, &text])
}

impl ClipModel {
    /// Load the Xenova / Hugging Face optimum layout: `onnx/{vision,text}_model[_quantized].onnx`,
    /// `tokenizer.json`, `preprocessor_config.json`, `config.json`.
    pub fn load(dir: &Path, variant: ModelVariant, threads: usize) -> Result<ClipModel, ClipError> {
        let started = Instant::now();
        if !dir.is_dir() {
            return Err(ClipError::MissingFile {
                dir: dir.to_path_buf(),
                what: "model directory".into(),
                path: dir.to_path_buf(),
            });
        }
        let suffix = variant.file_suffix();
        let vision = require(
            dir,
            &format!("onnx/vision_model{suffix}.onnx"),
            "the vision encoder",
        )?;
        let text = require(
            dir,
            &format!("onnx/text_model{suffix}.onnx"),
            "the text encoder",
        )?;
        let tokenizer_path = require(dir, "tokenizer.json", "the tokenizer")?;
        let preprocessor = require(
            dir,
            "preprocessor_config.json",
            "the image preprocessing config",
        )?;

        let preprocess_text =
            std::fs::read_to_string(&preprocessor).map_err(|e| ClipError::BadFile {
                path: preprocessor.clone(),
                reason: e.to_string(),
            })?;
        let preprocess = PreprocessConfig::from_hf_json(&preprocess_text).map_err(|reason| {
            ClipError::BadFile {
                path: preprocessor.clone(),
                reason,
            }
        })?;

        let config = match dir.join("config.json") {
            p if p.is_file() => Some(read_json(&p)?),
            _ => None,
        };
        let context_length = config
            .as_ref()
            .and_then(|c| c.pointer("/text_config/max_position_embeddings"))
            .and_then(|v| v.as_u64())
            .unwrap_or(77) as usize;
        let pad_token = match dir.join("tokenizer_config.json") {
            p if p.is_file() => {
                let cfg = read_json(&p)?;
                match cfg.get("pad_token") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v
                        .get("content")
                        .and_then(|c| c.as_str())
                        .unwrap_or("<|endoftext|>")
                        .to_string(),
                    None => "<|endoftext|>".to_string(),
                }
            }
            _ => "<|endoftext|>".to_string(),
        };
        let tokenizer = ClipTokenizer::from_file(&tokenizer_path, context_length, &pad_token)
            .map_err(|reason| ClipError::BadFile {
                path: tokenizer_path.clone(),
                reason,
            })?;

        let options = run_options(threads);
        let (h, w) = preprocess.output_size();
        let image = Encoder::load(
            &vision,
            &["image_embeds", "embedding"],
            vec![3, h as usize, w as usize],
            options.clone(),
        )?;
        let text_encoder = Encoder::load(
            &text,
            &["text_embeds", "embedding"],
            vec![context_length],
            options,
        )?;
        if !matches!(text_encoder.input_type, DatumType::I64 | DatumType::I32) {
            return Err(ClipError::Onnx {
                path: text.clone(),
                reason: format!(
                    "token input has type {:?}, expected int64 or int32",
                    text_encoder.input_type
                ),
            });
        }
        if image.dim != text_encoder.dim {
            return Err(ClipError::Mismatch {
                dir: dir.to_path_buf(),
                reason: format!(
                    "image embeddings are {} wide but text embeddings {}",
                    image.dim, text_encoder.dim
                ),
            });
        }
        let id = hash_files(&[&vision, &text])?;
        Ok(ClipModel {
            id,
            dir: dir.to_path_buf(),
            files: ModelFiles {
                vision,
                text,
                tokenizer: tokenizer_path,
                preprocessor,
            },
            preprocess,
            tokenizer,
            embedding_dim: image.dim,
            load_time: started.elapsed(),
            image,
            text: text_encoder,
        })
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
        let mut out = Vec::with_capacity(texts.len());
        for range in self.text.chunks(texts.len()) {
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
                    path: self.text.path.clone(),
                    reason: format_err(&e),
                })
            };
            let main = match self.text.input_type {
                DatumType::I32 => make(Tensor::from_shape(
                    &shape,
                    &flat.iter().map(|&t| t as i32).collect::<Vec<_>>(),
                ))?,
                _ => make(Tensor::from_shape(
                    &shape,
                    &flat.iter().map(|&t| t as i64).collect::<Vec<_>>(),
                ))?,
            };
            let mask = if self.text.inputs.contains(&InputKind::AttentionMask) {
                Some(make(Tensor::from_shape(&shape, &mask))?)
            } else {
                None
            };
            let embeddings = self.text.run(batch, main, mask)?;
            out.extend(rows.iter().cloned().zip(embeddings));
        }
        Ok(out)
    }
}
