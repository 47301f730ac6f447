//! A loaded CLIP model: both encoders, its tokenizer and its preprocessing recipe; frames,
//! tensors and texts in, normalised embeddings out.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cliptag_tract::pool;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::runtime::RunOptions;

use super::device::{self, Device};
use super::encoder::{Encoder, Expectation, GraphInfo, InputKind};
use super::error::{format_err, ClipError};
use super::identity::hash_files;
use super::layout::{locate, ModelSpec};
use super::options::{ModelSettings, ModelVariant};
use super::preprocess::{preprocess, PreprocessConfig};
use super::tokenizer::ClipTokenizer;
use crate::ingest::RgbImage;

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
        crate::memory::release_free_memory();
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
            crate::memory::release_free_memory();
            tracing::debug!("text tower released");
        }
    }

    /// What the two graphs declare: (vision, text). Loads the text tower if needed.
    pub fn graph_info(&self) -> Result<(GraphInfo, GraphInfo), ClipError> {
        Ok((self.image.info.clone(), self.text_encoder()?.info.clone()))
    }

    /// Preprocess and embed frames.
    pub fn embed_frames(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>, ClipError> {
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
