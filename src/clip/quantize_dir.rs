//! `cliptag model quantize`: writes an int8 copy of an fp32 CLIP model directory, each
//! encoder rewritten by `cliptag_tract::int8_export`, so it runs on the fused int8 path and
//! loads in onnxruntime as well.
//!
//! Rules, and why:
//! - The output directory must not exist or be empty: nothing of an earlier model is mixed in.
//! - Every other file is copied as it is, so the copy loads like the original.
//! - A Xenova directory gains `onnx/*_quantized.onnx` beside the fp32 files (so
//!   `variant = "auto"` picks them); an Immich directory's two encoders are replaced.
//! - A file with no fp32 `MatMul` weight to quantize is an error, not a silent copy.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use cliptag_tract::int8_export::quantize_graph;
use prost::Message;
use tract_onnx::pb::ModelProto;

use super::error::ClipError;
use super::layout::{detect, Layout};

/// What `quantize_model_dir` wrote.
#[derive(Debug)]
pub struct QuantizeReport {
    pub layout: Layout,
    /// (written file, layers quantized, bytes before, bytes after)
    pub files: Vec<(PathBuf, usize, u64, u64)>,
}

fn bad(path: &Path, reason: impl Into<String>) -> ClipError {
    ClipError::BadFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn quantize_file(from: &Path, to: &Path) -> Result<(usize, u64, u64), ClipError> {
    let bytes = std::fs::read(from).map_err(|e| bad(from, e.to_string()))?;
    let mut model = ModelProto::decode(bytes.as_slice())
        .map_err(|e| bad(from, format!("not an ONNX model: {e}")))?;
    let layers = quantize_graph(&mut model).map_err(|e| bad(from, e.to_string()))?;
    if layers == 0 {
        return Err(bad(from, "no MatMul with an fp32 weight to quantize"));
    }
    let out = model.encode_to_vec();
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| bad(dir, e.to_string()))?;
    }
    std::fs::write(to, &out).map_err(|e| bad(to, e.to_string()))?;
    Ok((layers, bytes.len() as u64, out.len() as u64))
}

/// Writes `output`: a copy of the model directory `input` with int8 encoders. A Xenova
/// directory gains `onnx/*_quantized.onnx` beside the fp32 files (so `variant = "auto"`
/// picks them); an Immich directory's `visual/model.onnx` and `textual/model.onnx` are
/// replaced.
pub fn quantize_model_dir(input: &Path, output: &Path) -> Result<QuantizeReport, ClipError> {
    let layout = detect(input)?;
    if output.exists()
        && std::fs::read_dir(output)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(bad(output, "the output directory exists and is not empty"));
    }
    let encoders: &[(&str, &str)] = match layout {
        Layout::Xenova => &[
            ("onnx/vision_model.onnx", "onnx/vision_model_quantized.onnx"),
            ("onnx/text_model.onnx", "onnx/text_model_quantized.onnx"),
        ],
        Layout::Immich => &[
            ("visual/model.onnx", "visual/model.onnx"),
            ("textual/model.onnx", "textual/model.onnx"),
        ],
    };
    let rewritten: HashSet<&str> = encoders.iter().map(|(_, to)| *to).collect();
    copy_tree(input, output, Path::new(""), &rewritten)?;
    let mut report = QuantizeReport {
        layout,
        files: vec![],
    };
    for (from, to) in encoders {
        let (from, to) = (input.join(from), output.join(to));
        if !from.is_file() {
            return Err(ClipError::MissingFile {
                dir: input.to_path_buf(),
                what: "an fp32 encoder".into(),
                path: from,
            });
        }
        let (layers, before, after) = quantize_file(&from, &to)?;
        report.files.push((to, layers, before, after));
    }
    Ok(report)
}

/// Copies every file under `from/rel` except those about to be written.
fn copy_tree(from: &Path, to: &Path, rel: &Path, skip: &HashSet<&str>) -> Result<(), ClipError> {
    let dir = from.join(rel);
    let entries = std::fs::read_dir(&dir).map_err(|e| bad(&dir, e.to_string()))?;
    std::fs::create_dir_all(to.join(rel)).map_err(|e| bad(&to.join(rel), e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(&dir, e.to_string()))?;
        let rel = rel.join(entry.file_name());
        let path = entry.path();
        if path.is_dir() {
            copy_tree(from, to, &rel, skip)?;
        } else if !skip.contains(rel.to_string_lossy().as_ref()) {
            std::fs::copy(&path, to.join(&rel)).map_err(|e| bad(&path, e.to_string()))?;
        }
    }
    Ok(())
}
