//! ViFi-CLIP fine-tuning (paper 003): both towers trained on videos, frames encoded
//! independently, the video embedding the mean of its frame embeddings, class texts
//! "a photo of a {class}.", cross-entropy over the class set with CLIP's learned logit scale.
//!
//! Rules:
//! - AdamW (weight decay 0.001 by default) on every trained weight except norms, biases,
//!   embeddings' class token and the logit scale, which get none (two optimizers, one
//!   schedule); linear warm-up then cosine decay; global-norm gradient clipping.
//! - Patch dropout (paper 002) during training only, keep rate configurable; evaluation
//!   sees every patch.
//! - `freeze_layers = n` leaves both towers' embeddings and their lowest n blocks as they
//!   are (paper 002: frozen lower layers cost less and lose little).
//! - Deterministic for a seed: the epoch order and the dropped patches come from it.
//! - After every epoch the weights and the loop's position are checkpointed (when asked);
//!   a resumed run continues at the next epoch. AdamW's moments are not saved: they
//!   rebuild within a few steps, and candle's optimiser does not expose them.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::error::TuneError;
use super::model::{normalize, Clip};

/// How `finetune` trains: the struct is also the command's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FinetuneSettings {
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Videos per step.
    #[arg(long = "batch", default_value_t = 8)]
    pub batch_videos: usize,
    #[arg(long, default_value_t = 1e-5)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = 0.001)]
    pub weight_decay: f64,
    /// Fraction of the steps spent warming the learning rate up.
    #[arg(long = "warmup", default_value_t = 0.1)]
    pub warmup_fraction: f64,
    /// Global gradient-norm cap.
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    /// Patch dropout keep rate (1 = off; paper 002 uses 0.5).
    #[arg(long, default_value_t = 0.5)]
    pub patch_keep: f64,
    /// Leave the embeddings and this many lower blocks of each tower frozen.
    #[arg(long, default_value_t = 0)]
    pub freeze_layers: usize,
    /// Seed of the split (when the CSV has none), the epoch order and the dropped patches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint after every epoch here, and resume from it when it holds one.
    #[arg(long = "checkpoints")]
    pub checkpoint_dir: Option<PathBuf>,
}

impl FinetuneSettings {
    /// Values the flags' types allow but training cannot use.
    pub fn validate(&self) -> Result<(), TuneError> {
        if self.batch_videos == 0 {
            return Err(TuneError::Training("--batch must be at least 1".into()));
        }
        if !(self.patch_keep > 0.0 && self.patch_keep <= 1.0) {
            return Err(TuneError::Training(format!(
                "--patch-keep must be in (0, 1], got {}",
                self.patch_keep
            )));
        }
        Ok(())
    }
}

impl Default for FinetuneSettings {
    fn default() -> Self {
        FinetuneSettings {
            epochs: 10,
            batch_videos: 8,
            learning_rate: 1e-5,
            weight_decay: 0.001,
            warmup_fraction: 0.1,
            clip_norm: 1.0,
            patch_keep: 0.5,
            freeze_layers: 0,
            seed: 0,
            checkpoint_dir: None,
        }
    }
}

/// One video's preprocessed keyframes and its class.
#[derive(Debug, Clone)]
pub struct TrainingVideo {
    pub frames: Vec<Vec<f32>>,
    pub class: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub steps: usize,
    pub train_loss: f64,
    pub val_accuracy: f64,
    pub learning_rate: f64,
    pub videos_per_second: f64,
}

/// Called after every step: (step, steps in all, loss, videos per second).
pub type StepCallback<'a> = &'a mut dyn FnMut(usize, usize, f64, f64);

fn candle_err(e: candle_core::Error) -> TuneError {
    TuneError::Training(e.to_string())
}

/// Embeddings of videos (mean of normalised frame embeddings, re-normalised), [n, P].
pub fn video_embeddings(
    clip: &Clip,
    videos: &[&TrainingVideo],
    keep: f64,
    seed: u64,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let counts: Vec<usize> = videos.iter().map(|v| v.frames.len()).collect();
    let total: usize = counts.iter().sum();
    let pixels: Vec<f32> = videos
        .iter()
        .flat_map(|v| v.frames.iter().flatten().copied())
        .collect();
    let side = ((pixels.len() / total.max(1) / 3) as f64).sqrt() as usize;
    let pixels = Tensor::from_vec(pixels, (total, 3, side, side), device)?;
    let frames = normalize(&clip.vision.forward(&pixels, keep, seed)?)?;
    let mut start = 0;
    let mut pooled = Vec::with_capacity(videos.len());
    for n in counts {
        pooled.push(frames.narrow(0, start, n)?.mean(0)?);
        start += n;
    }
    normalize(&Tensor::stack(&pooled, 0)?)
}

/// Class text embeddings, normalised, [C, P].
pub fn text_embeddings(clip: &Clip, class_ids: &Tensor) -> candle_core::Result<Tensor> {
    normalize(&clip.text.forward(class_ids)?)
}

/// Top-1 accuracy of the model on videos, in batches.
pub fn accuracy(
    clip: &Clip,
    class_ids: &Tensor,
    videos: &[TrainingVideo],
    device: &Device,
) -> candle_core::Result<f64> {
    if videos.is_empty() {
        return Ok(0.0);
    }
    let texts = text_embeddings(clip, class_ids)?;
    let mut correct = 0;
    for chunk in videos.chunks(16) {
        let refs: Vec<&TrainingVideo> = chunk.iter().collect();
        let v = video_embeddings(clip, &refs, 1.0, 0, device)?;
        let predicted = v.matmul(&texts.t()?)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
        correct += predicted
            .iter()
            .zip(chunk)
            .filter(|(p, v)| **p as usize == v.class)
            .count();
    }
    Ok(correct as f64 / videos.len() as f64)
}

/// Which trained parameters get weight decay: matrices, not norms, biases, the class token
/// or the logit scale.
fn decays(name: &str) -> bool {
    !(name.ends_with(".bias")
        || name.contains("norm")
        || name.contains("layrnorm")
        || name.ends_with("class_embedding")
        || name == "logit_scale")
}

/// Whether `name` stays frozen with `freeze_layers` lower blocks frozen.
fn frozen(name: &str, freeze_layers: usize) -> bool {
    if freeze_layers == 0 {
        return false;
    }
    if name.contains(".embeddings.") || name.contains("pre_layrnorm") {
        return true;
    }
    name.split(".encoder.layers.")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i < freeze_layers)
}

/// Learning rate at `step` of `total`: linear warm-up, then cosine to zero.
pub fn schedule(step: usize, total: usize, base: f64, warmup_fraction: f64) -> f64 {
    let warmup = ((total as f64 * warmup_fraction).round() as usize).max(1);
    if step < warmup {
        base * (step + 1) as f64 / warmup as f64
    } else {
        let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
        base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CheckpointState {
    epochs_done: usize,
    steps_done: usize,
    log: Vec<EpochLog>,
}

/// Train; returns one log line per epoch (resumed epochs included).
#[allow(clippy::too_many_arguments)]
pub fn finetune(
    clip: &Clip,
    varmap: &mut VarMap,
    class_ids: &Tensor,
    train: &[TrainingVideo],
    val: &[TrainingVideo],
    settings: &FinetuneSettings,
    device: &Device,
    on_step: StepCallback,
) -> Result<Vec<EpochLog>, TuneError> {
    let (mut decayed, mut plain): (Vec<Var>, Vec<Var>) = (Vec::new(), Vec::new());
    {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| TuneError::Training("parameter map poisoned".into()))?;
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            if frozen(name, settings.freeze_layers) {
                continue;
            }
            let var = vars[name].clone();
            if decays(name) {
                decayed.push(var);
            } else {
                plain.push(var);
            }
        }
    }
    let params = |weight_decay| ParamsAdamW {
        lr: settings.learning_rate,
        weight_decay,
        ..Default::default()
    };
    let mut opt_decayed =
        AdamW::new(decayed.clone(), params(settings.weight_decay)).map_err(candle_err)?;
    let mut opt_plain = AdamW::new(plain.clone(), params(0.0)).map_err(candle_err)?;
    let trained: Vec<Var> = decayed.into_iter().chain(plain).collect();

    let steps_per_epoch = train.len().div_ceil(settings.batch_videos.max(1));
    let total_steps = steps_per_epoch * settings.epochs;
    let (mut start_epoch, mut step, mut log) = (0, 0, Vec::new());
    if let Some(dir) = &settings.checkpoint_dir {
        std::fs::create_dir_all(dir).map_err(|e| checkpoint_err(dir, e.to_string()))?;
        let state_path = dir.join("state.json");
        if let Ok(text) = std::fs::read_to_string(&state_path) {
            let state: CheckpointState = serde_json::from_str(&text)
                .map_err(|e| checkpoint_err(&state_path, e.to_string()))?;
            varmap
                .load(dir.join("weights.safetensors"))
                .map_err(|e| checkpoint_err(dir, e.to_string()))?;
            tracing::info!(
                epochs_done = state.epochs_done,
                "resuming from {}",
                dir.display()
            );
            (start_epoch, step, log) = (state.epochs_done, state.steps_done, state.log);
        }
    }

    let mut order: Vec<usize> = (0..train.len()).collect();
    for epoch in start_epoch..settings.epochs {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(settings.seed ^ (epoch as u64) << 20);
        order.shuffle(&mut rng);
        let started = std::time::Instant::now();
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        let mut lr = settings.learning_rate;
        for batch in order.chunks(settings.batch_videos.max(1)) {
            let step_started = std::time::Instant::now();
            lr = schedule(
                step,
                total_steps,
                settings.learning_rate,
                settings.warmup_fraction,
            );
            opt_decayed.set_learning_rate(lr);
            opt_plain.set_learning_rate(lr);
            let videos: Vec<&TrainingVideo> = batch.iter().map(|&i| &train[i]).collect();
            let labels: Vec<u32> = videos.iter().map(|v| v.class as u32).collect();
            let loss = (|| -> candle_core::Result<Tensor> {
                let v = video_embeddings(
                    clip,
                    &videos,
                    settings.patch_keep,
                    settings.seed ^ step as u64,
                    device,
                )?;
                let t = text_embeddings(clip, class_ids)?;
                // CLIP clamps its temperature at 100.
                let scale = clip.logit_scale.exp()?.clamp(0.0, 100.0)?;
                let logits = v.matmul(&t.t()?)?.broadcast_mul(&scale)?;
                let labels = Tensor::from_vec(labels.clone(), labels.len(), device)?;
                candle_nn::loss::cross_entropy(&logits, &labels)
            })()
            .map_err(candle_err)?;
            let mut grads = loss.backward().map_err(candle_err)?;
            // Global-norm clipping over the trained parameters.
            let mut norm_sq = 0.0f64;
            for var in &trained {
                if let Some(g) = grads.get(var) {
                    norm_sq += g
                        .sqr()
                        .and_then(|s| s.sum_all())
                        .and_then(|s| s.to_dtype(DType::F64))
                        .and_then(|s| s.to_scalar::<f64>())
                        .map_err(candle_err)?;
                }
            }
            let norm = norm_sq.sqrt();
            if norm > settings.clip_norm {
                let factor = settings.clip_norm / norm;
                for var in &trained {
                    if let Some(g) = grads.remove(var) {
                        grads.insert(var, (g * factor).map_err(candle_err)?);
                    }
                }
            }
            opt_decayed.step(&grads).map_err(candle_err)?;
            opt_plain.step(&grads).map_err(candle_err)?;
            let value = loss.to_scalar::<f32>().map_err(candle_err)? as f64;
            loss_sum += value * batch.len() as f64;
            seen += batch.len();
            step += 1;
            on_step(
                step,
                total_steps,
                value,
                batch.len() as f64 / step_started.elapsed().as_secs_f64().max(1e-9),
            );
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let val_accuracy = accuracy(clip, class_ids, val, device).map_err(candle_err)?;
        log.push(EpochLog {
            epoch: epoch + 1,
            steps: step,
            train_loss: loss_sum / seen.max(1) as f64,
            val_accuracy,
            learning_rate: lr,
            videos_per_second: seen as f64 / train_seconds.max(1e-9),
        });
        if let Some(dir) = &settings.checkpoint_dir {
            save_checkpoint(dir, varmap, epoch + 1, step, &log)?;
        }
    }
    Ok(log)
}

fn checkpoint_err(path: &Path, reason: String) -> TuneError {
    TuneError::Cache {
        path: path.display().to_string(),
        reason: format!("checkpoint: {reason}"),
    }
}

fn save_checkpoint(
    dir: &Path,
    varmap: &VarMap,
    epochs_done: usize,
    steps_done: usize,
    log: &[EpochLog],
) -> Result<(), TuneError> {
    // Weights first, then the state that points at them, each written aside and renamed:
    // a crash leaves the previous checkpoint whole.
    let weights = dir.join("weights.safetensors");
    let partial = dir.join("weights.safetensors.partial");
    varmap
        .save(&partial)
        .map_err(|e| checkpoint_err(&partial, e.to_string()))?;
    std::fs::rename(&partial, &weights).map_err(|e| checkpoint_err(&weights, e.to_string()))?;
    let state = CheckpointState {
        epochs_done,
        steps_done,
        log: log.to_vec(),
    };
    let text =
        serde_json::to_string_pretty(&state).map_err(|e| checkpoint_err(dir, e.to_string()))?;
    let state_path = dir.join("state.json");
    std::fs::write(dir.join("state.json.partial"), text)
        .and_then(|()| std::fs::rename(dir.join("state.json.partial"), &state_path))
        .map_err(|e| checkpoint_err(&state_path, e.to_string()))
}

/// Where training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TrainingDevice {
    /// The first CUDA GPU when this build has candle's CUDA backend and a GPU answers, else
    /// the CPU.
    #[default]
    Auto,
    Cpu,
    /// The first CUDA GPU, or an error saying why not.
    Cuda,
}

impl TrainingDevice {
    pub fn open(self) -> Result<Device, TuneError> {
        let cuda = || {
            Device::new_cuda(0).map_err(|e| {
                TuneError::Training(if candle_core::utils::cuda_is_available() {
                    format!("CUDA GPU 0 cannot be used: {e}")
                } else {
                    "this cliptag-tune was built without candle's CUDA backend: rebuild it \
                     with `cargo build --release -p cliptag-tune --features cuda` (needs the CUDA \
                     toolkit's nvcc)"
                        .into()
                })
            })
        };
        match self {
            TrainingDevice::Cpu => Ok(Device::Cpu),
            TrainingDevice::Cuda => cuda(),
            TrainingDevice::Auto if candle_core::utils::cuda_is_available() => {
                cuda().or_else(|e| {
                    tracing::warn!("training on the CPU: {e}");
                    Ok(Device::Cpu)
                })
            }
            TrainingDevice::Auto => Ok(Device::Cpu),
        }
    }
}

/// A base model directory opened for training: the towers, their weights, and what turns
/// videos and class names into inputs.
pub struct TrainingSetup {
    pub clip: Clip,
    pub varmap: VarMap,
    pub recipe: cliptag::clip::PreprocessConfig,
    pub tokenizer: cliptag::clip::ClipTokenizer,
    pub device: Device,
}

impl TrainingSetup {
    /// `dir`: Hugging Face CLIP weights (config.json, model.safetensors) with the tokenizer
    /// and preprocessor files beside them, as openai/clip-vit-base-patch32 ships.
    pub fn open(dir: &Path, device: Device) -> Result<TrainingSetup, TuneError> {
        let (clip, varmap) = super::model::load_hf(dir, &device)?;
        let err = |path: PathBuf, reason: String| TuneError::Model {
            path: path.display().to_string(),
            reason,
        };
        let pp = dir.join("preprocessor_config.json");
        let text = std::fs::read_to_string(&pp)
            .map_err(|e| err(pp.clone(), format!("cannot read: {e}")))?;
        let recipe =
            cliptag::clip::PreprocessConfig::from_hf_json(&text).map_err(|e| err(pp.clone(), e))?;
        let tj = dir.join("tokenizer.json");
        let tokenizer = cliptag::clip::ClipTokenizer::from_file(
            &tj,
            clip.config.text_config.max_position_embeddings,
            "<|endoftext|>",
            cliptag::clip::TextCleaning::None,
        )
        .map_err(|e| err(tj.clone(), e))?;
        Ok(TrainingSetup {
            clip,
            varmap,
            recipe,
            tokenizer,
            device,
        })
    }

    /// ViFi-CLIP's class texts: "a photo of a {class}." for class names, captions as written.
    pub fn class_ids(&self, classes: &[String]) -> Result<Tensor, TuneError> {
        let texts = cliptag::classify::expand_labels(classes, &["a photo of a {}.".to_string()]);
        let mut ids = Vec::new();
        for label in &texts {
            let prompt = label
                .prompts
                .first()
                .map_or(label.text.as_str(), String::as_str);
            ids.extend(self.tokenizer.encode(prompt).map_err(|reason| {
                TuneError::Training(format!("tokenizing {prompt:?}: {reason}"))
            })?);
        }
        let n = self.tokenizer.context_length();
        Tensor::from_vec(ids, (classes.len(), n), &self.device).map_err(candle_err)
    }

    /// Decode every video of a split into its preprocessed keyframes; undecodable videos
    /// are skipped with a warning.
    pub fn videos(
        &self,
        dataset: &super::dataset::Dataset,
        split: super::dataset::Split,
        settings: &super::embed::EmbedSettings,
    ) -> Result<Vec<TrainingVideo>, TuneError> {
        let mut out = Vec::new();
        for example in dataset.split(split) {
            match super::embed::keyframe_pixels(&self.recipe, settings, &example.path) {
                Ok(frames) => out.push(TrainingVideo {
                    frames,
                    class: example.class,
                }),
                Err(e) if e.disposition() == cliptag::Disposition::Skip => {
                    tracing::warn!("skipped: {e}")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Write the (trained) weights as a Hugging Face directory beside copies of the base's
    /// [`SIDE_FILES`](super::model::SIDE_FILES).
    pub fn save(&self, base: &Path, out: &Path) -> Result<(), TuneError> {
        let err = |path: &Path, e: String| TuneError::Model {
            path: path.display().to_string(),
            reason: e,
        };
        std::fs::create_dir_all(out).map_err(|e| err(out, e.to_string()))?;
        super::model::copy_side_files(base, out)?;
        let weights = out.join("model.safetensors");
        self.varmap
            .save(&weights)
            .map_err(|e| err(&weights, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let lrs: Vec<f64> = (0..100).map(|s| schedule(s, 100, 1.0, 0.1)).collect();
        assert!((lrs[0] - 0.1).abs() < 1e-12);
        assert!((lrs[9] - 1.0).abs() < 1e-12);
        assert!(lrs[10..].windows(2).all(|w| w[1] <= w[0]));
        assert!(lrs[99] < 0.01);
    }

    #[test]
    fn decay_and_freezing_follow_parameter_names() {
        assert!(decays("vision_model.encoder.layers.0.mlp.fc1.weight"));
        assert!(!decays("vision_model.encoder.layers.0.mlp.fc1.bias"));
        assert!(!decays("text_model.final_layer_norm.weight"));
        assert!(!decays("vision_model.pre_layrnorm.weight"));
        assert!(!decays("logit_scale"));
        assert!(frozen("vision_model.encoder.layers.0.mlp.fc1.weight", 1));
        assert!(!frozen("vision_model.encoder.layers.1.mlp.fc1.weight", 1));
        assert!(frozen("text_model.embeddings.token_embedding.weight", 1));
        assert!(!frozen("text_model.encoder.layers.0.mlp.fc1.weight", 0));
        assert!(!frozen("visual_projection.weight", 2));
    }
}
