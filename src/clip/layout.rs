//! Where a downloaded CLIP model keeps its files, and what its configs say.
//!
//! Two layouts cover what users download:
//! - Xenova / Hugging Face optimum: `onnx/{vision,text}_model[_quantized|_fp16].onnx`,
//!   `tokenizer.json`, `preprocessor_config.json` (HF dialect), `config.json`.
//! - Immich / open_clip exports: `visual/model.onnx`, `visual/preprocess_cfg.json` (open_clip
//!   dialect), `textual/model.onnx`, `textual/tokenizer.json`,
//!   `textual/tokenizer_config.json`, `config.json` (open_clip's `text_cfg`).
//!
//! Context length and pad token come from the configs, never from a constant.

use std::path::{Path, PathBuf};

use super::error::ClipError;
use super::options::{LayoutChoice, ModelVariant};
use super::preprocess::PreprocessConfig;
use super::tokenizer::TextCleaning;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Xenova,
    Immich,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Xenova => "xenova (Hugging Face optimum)",
            Layout::Immich => "immich (open_clip export)",
        }
    }

    /// The names the graphs' inputs must have: (image, text).
    pub fn input_names(self) -> (&'static str, &'static str) {
        match self {
            Layout::Xenova => ("pixel_values", "input_ids"),
            Layout::Immich => ("image", "text"),
        }
    }

    /// open_clip exports were trained on open_clip's cleaned text.
    pub fn text_cleaning(self) -> TextCleaning {
        match self {
            Layout::Xenova => TextCleaning::None,
            Layout::Immich => TextCleaning::OpenClip,
        }
    }

    /// The outputs to read: (image, text).
    pub fn output_names(self) -> (&'static str, &'static str) {
        match self {
            Layout::Xenova => ("image_embeds", "text_embeds"),
            Layout::Immich => ("embedding", "embedding"),
        }
    }
}

impl LayoutChoice {
    /// The layout forced by the choice; `None` means detect.
    pub fn forced(self) -> Option<Layout> {
        match self {
            LayoutChoice::Auto => None,
            LayoutChoice::Xenova => Some(Layout::Xenova),
            LayoutChoice::Immich => Some(Layout::Immich),
        }
    }
}

/// Everything about a model directory that is decided before tract sees a graph.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub dir: PathBuf,
    pub layout: Layout,
    /// The variant loaded, with `Auto` resolved.
    pub variant: ModelVariant,
    pub vision: PathBuf,
    pub text: PathBuf,
    pub tokenizer: PathBuf,
    pub preprocess_file: PathBuf,
    pub preprocess: PreprocessConfig,
    pub context_length: usize,
    pub pad_token: String,
}

impl ModelSpec {
    /// Every file the model is made of, for hashing and reports.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![
            self.vision.clone(),
            self.text.clone(),
            self.tokenizer.clone(),
            self.preprocess_file.clone(),
        ];
        for extra in self.optional_files() {
            if extra.is_file() {
                files.push(extra);
            }
        }
        files
    }

    fn optional_files(&self) -> Vec<PathBuf> {
        let names = FileNames::of(self.layout, ModelVariant::Fp32);
        vec![
            self.dir.join("config.json"),
            self.dir.join(names.tokenizer_config),
        ]
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

fn optional_json(path: &Path) -> Result<Option<serde_json::Value>, ClipError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// `pad_token` of a tokenizer_config.json: a string or `{"content": ...}`.
fn pad_token_of(config: Option<&serde_json::Value>) -> Option<String> {
    match config?.get("pad_token")? {
        serde_json::Value::String(s) => Some(s.clone()),
        v => v
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
    }
}

/// Which layout a directory holds, unless the config forces one.
pub fn detect(dir: &Path) -> Result<Layout, ClipError> {
    if dir.join("onnx").is_dir() {
        Ok(Layout::Xenova)
    } else if dir.join("visual").is_dir() || dir.join("textual").is_dir() {
        Ok(Layout::Immich)
    } else {
        Err(ClipError::MissingFile {
            dir: dir.to_path_buf(),
            what: "a CLIP model: neither onnx/ (Xenova / Hugging Face optimum layout) nor visual/ and textual/ (Immich layout)".into(),
            path: dir.join("onnx"),
        })
    }
}

/// Find the files of `dir` and read its configs.
pub fn locate(
    dir: &Path,
    variant: ModelVariant,
    forced: Option<Layout>,
) -> Result<ModelSpec, ClipError> {
    if !dir.is_dir() {
        return Err(ClipError::MissingFile {
            dir: dir.to_path_buf(),
            what: "model directory".into(),
            path: dir.to_path_buf(),
        });
    }
    let layout = match forced {
        Some(l) => l,
        None => detect(dir)?,
    };
    let variant = match (variant, layout) {
        // Immich ships one file per tower, whatever its precision.
        (ModelVariant::Auto, Layout::Immich) => ModelVariant::Fp32,
        (ModelVariant::Auto, Layout::Xenova) => {
            let int8 = FileNames::of(layout, ModelVariant::Quantized);
            if dir.join(&int8.vision).is_file() && dir.join(&int8.text).is_file() {
                ModelVariant::Quantized
            } else {
                ModelVariant::Fp32
            }
        }
        (chosen, _) => chosen,
    };
    if layout == Layout::Immich && variant != ModelVariant::Fp32 {
        return Err(ClipError::Mismatch {
            dir: dir.to_path_buf(),
            reason: format!(
                "the Immich layout has one model.onnx per tower; variant {variant:?} names files it does not have (use variant = \"fp32\" and put the file you want at visual/model.onnx)"
            ),
        });
    }
    let names = FileNames::of(layout, variant);
    let vision = require(dir, &names.vision, "the vision encoder")?;
    let text = require(dir, &names.text, "the text encoder")?;
    let tokenizer = require(dir, names.tokenizer, "the tokenizer")?;
    let preprocess_file = require(dir, names.preprocess, "the image preprocessing config")?;
    let preprocess = (names.parse_preprocess)(&read_text(&preprocess_file)?).map_err(|reason| {
        ClipError::BadFile {
            path: preprocess_file.clone(),
            reason,
        }
    })?;
    let config = optional_json(&dir.join("config.json"))?;
    let context_length = config
        .as_ref()
        .and_then(|c| c.pointer(names.context_length_pointer))
        .and_then(|v| v.as_u64())
        .unwrap_or(77) as usize;
    let tokenizer_config = optional_json(&dir.join(names.tokenizer_config))?;
    let pad_token =
        pad_token_of(tokenizer_config.as_ref()).unwrap_or_else(|| "<|endoftext|>".into());
    Ok(ModelSpec {
        dir: dir.to_path_buf(),
        layout,
        variant,
        vision,
        text,
        tokenizer,
        preprocess_file,
        preprocess,
        context_length,
        pad_token,
    })
}

/// Where each layout keeps each file, and how it states the context length.
struct FileNames {
    vision: String,
    text: String,
    tokenizer: &'static str,
    preprocess: &'static str,
    tokenizer_config: &'static str,
    context_length_pointer: &'static str,
    parse_preprocess: fn(&str) -> Result<PreprocessConfig, String>,
}

impl FileNames {
    fn of(layout: Layout, variant: ModelVariant) -> FileNames {
        match layout {
            Layout::Xenova => {
                let suffix = variant.file_suffix();
                FileNames {
                    vision: format!("onnx/vision_model{suffix}.onnx"),
                    text: format!("onnx/text_model{suffix}.onnx"),
                    tokenizer: "tokenizer.json",
                    preprocess: "preprocessor_config.json",
                    tokenizer_config: "tokenizer_config.json",
                    context_length_pointer: "/text_config/max_position_embeddings",
                    parse_preprocess: PreprocessConfig::from_hf_json,
                }
            }
            Layout::Immich => FileNames {
                vision: "visual/model.onnx".into(),
                text: "textual/model.onnx".into(),
                tokenizer: "textual/tokenizer.json",
                preprocess: "visual/preprocess_cfg.json",
                tokenizer_config: "textual/tokenizer_config.json",
                context_length_pointer: "/text_cfg/context_length",
                parse_preprocess: PreprocessConfig::from_open_clip_json,
            },
        }
    }
}

fn read_text(path: &Path) -> Result<String, ClipError> {
    std::fs::read_to_string(path).map_err(|e| ClipError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}
