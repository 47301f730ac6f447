//! How to load a model: the `[model]` table of the config and the model flags of every
//! command, one struct for both.
//!
//! Rules, and why: a model option is declared once, here, with its help text; the config
//! deserialises [`ModelSettings`] and the binaries flatten it into their arguments, so a
//! new option is one field and can never mean one thing in the file and another on the
//! command line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Which ONNX files of a model directory to load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelVariant {
    /// int8 where the model has it, else fp32
    #[default]
    Auto,
    /// onnx/vision_model.onnx, onnx/text_model.onnx
    Fp32,
    /// onnx/*_quantized.onnx (int8 weights)
    Quantized,
    /// onnx/*_fp16.onnx (half-precision weights, widened to f32 at load)
    Fp16,
}

impl ModelVariant {
    pub fn file_suffix(self) -> &'static str {
        match self {
            ModelVariant::Auto | ModelVariant::Fp32 => "",
            ModelVariant::Quantized => "_quantized",
            ModelVariant::Fp16 => "_fp16",
        }
    }
}

/// Where the CLIP encoders run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// An NVIDIA GPU when this build has the `cuda` feature and one is usable, else the CPU
    #[default]
    Auto,
    Cpu,
    /// The GPU or nothing: fails to start when CUDA is unusable
    Cuda,
}

/// Which layout a model directory holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LayoutChoice {
    /// Detect it from the directory
    #[default]
    Auto,
    /// onnx/{vision,text}_model*.onnx (Xenova / Hugging Face optimum)
    Xenova,
    /// visual/ and textual/ (Immich / open_clip export)
    Immich,
}

/// A model directory and how to load it: the `[model]` table, and `--model DIR` with its
/// companions on the command line.
#[derive(Debug, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// Model directory (Xenova / Hugging Face optimum, or Immich layout)
    #[arg(long = "model", value_name = "DIR")]
    pub dir: PathBuf,
    /// Which files of the directory to load
    #[arg(long, value_enum, default_value_t)]
    #[serde(default)]
    pub variant: ModelVariant,
    /// Directory layout
    #[arg(long, value_enum, default_value_t)]
    #[serde(default)]
    pub layout: LayoutChoice,
    /// Inference threads on the CPU (0 = one per core)
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub threads: usize,
    /// Where CLIP runs
    #[arg(long, value_enum, default_value_t)]
    #[serde(default)]
    pub device: DeviceChoice,
}

impl ModelSettings {
    /// `dir` with every option at its default (variant auto, layout detected, all cores,
    /// device auto), as a config's `[model]` table with only `dir`.
    pub fn new(dir: PathBuf) -> ModelSettings {
        ModelSettings {
            dir,
            variant: ModelVariant::default(),
            layout: LayoutChoice::default(),
            threads: 0,
            device: DeviceChoice::default(),
        }
    }

    /// `dir` on the CPU, layout detected.
    pub fn cpu(dir: &Path, variant: ModelVariant, threads: usize) -> ModelSettings {
        ModelSettings {
            dir: dir.to_path_buf(),
            variant,
            layout: LayoutChoice::Auto,
            threads,
            device: DeviceChoice::Cpu,
        }
    }

    /// The table as written, with `dir` resolved against the config file's directory.
    pub fn resolved(mut self, base: &Path) -> ModelSettings {
        self.dir = base.join(&self.dir);
        self
    }
}
