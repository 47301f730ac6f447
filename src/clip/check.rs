//! `cliptag model check`: load a model directory the way the daemon does, say everything a
//! user needs to know about it, and run a self-test; or say precisely why it is unusable.

use std::fmt;
use std::path::{Path, PathBuf};

use super::encoder::GraphInfo;
use super::error::ClipError;
use super::identity::hash_files;
use super::model::{ClipModel, TextTower};
use super::options::ModelSettings;
use super::vectors::cosine;
use crate::ingest::RgbImage;

pub struct FileReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

pub struct CheckReport {
    pub model: ClipModel,
    pub files: Vec<FileReport>,
    pub self_test: Vec<String>,
    /// What the graphs declare: (vision, text).
    pub graphs: (GraphInfo, GraphInfo),
}

/// Load, describe and self-test a model directory.
pub fn check_model(settings: &ModelSettings) -> Result<CheckReport, ClipError> {
    let model = ClipModel::load_with(settings, TextTower::Now)?;
    let mut files = Vec::new();
    for path in model.spec.files() {
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        files.push(FileReport {
            sha256: hash_files(&[&path])?,
            path,
            bytes,
        });
    }
    let self_test = self_test(&model)?;
    let graphs = model.graph_info()?;
    Ok(CheckReport {
        model,
        files,
        self_test,
        graphs,
    })
}

fn unit_and_finite(what: &str, v: &[f32], dim: usize) -> Result<String, String> {
    if v.len() != dim {
        return Err(format!("{what}: {} values, expected {dim}", v.len()));
    }
    if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
        return Err(format!("{what}: non-finite value {bad}"));
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if (norm - 1.0).abs() > 1e-3 {
        return Err(format!("{what}: norm {norm}, expected 1"));
    }
    Ok(format!("{what}: {dim} finite values, norm {norm:.6}"))
}

fn self_test(model: &ClipModel) -> Result<Vec<String>, ClipError> {
    let fail = |reason: String| ClipError::Mismatch {
        dir: model.dir.clone(),
        reason: format!("self-test failed: {reason}"),
    };
    // A colour gradient: not square, so the resize and crop paths run.
    let (w, h) = (320u32, 240u32);
    let data = (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [(x * 255 / w) as u8, (y * 255 / h) as u8, 128]))
        .collect();
    let image = RgbImage::new(w, h, data).ok_or_else(|| fail("synthetic image".into()))?;
    let images = model.embed_frames(&[&image, &image])?;
    let captions = vec![
        "a photo of a cat".to_string(),
        "a diagram of a colour gradient".to_string(),
    ];
    let texts = model.embed_texts(&captions)?;
    let dim = model.embedding_dim;
    let mut lines = Vec::new();
    lines.push(unit_and_finite("image embedding", &images[0], dim).map_err(fail)?);
    if cosine(&images[0], &images[1]) < 0.99999 {
        return Err(fail(
            "the same image embedded twice in one batch gave different embeddings".into(),
        ));
    }
    for (caption, (_, e)) in captions.iter().zip(&texts) {
        lines.push(
            unit_and_finite(&format!("text embedding of {caption:?}"), e, dim).map_err(fail)?,
        );
    }
    for (caption, (_, e)) in captions.iter().zip(&texts) {
        lines.push(format!(
            "cosine(image, {caption:?}) = {:.4}",
            cosine(&images[0], e)
        ));
    }
    Ok(lines)
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn write_graph(f: &mut fmt::Formatter<'_>, title: &str, path: &Path, g: &GraphInfo) -> fmt::Result {
    writeln!(
        f,
        "{title}: {} ({} nodes, {})",
        path.display(),
        g.nodes,
        if g.int8 { "int8 quantized" } else { "float" }
    )?;
    for (name, dt, shape) in &g.inputs {
        writeln!(f, "  input  {name}: {dt} {shape}")?;
    }
    for (name, dt, shape) in &g.outputs {
        writeln!(f, "  output {name}: {dt} {shape}")?;
    }
    Ok(())
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.model;
        writeln!(f, "model directory: {}", m.dir.display())?;
        writeln!(f, "layout: {}", m.spec.layout.name())?;
        writeln!(f, "model id: {}", m.id)?;
        writeln!(f, "files:")?;
        for file in &self.files {
            writeln!(
                f,
                "  {:>10}  sha256 {}…  {}",
                human_bytes(file.bytes),
                file.sha256,
                file.path.display()
            )?;
        }
        let (vision, text) = &self.graphs;
        write_graph(f, "vision", &m.spec.vision, vision)?;
        write_graph(f, "text", &m.spec.text, text)?;
        writeln!(f, "embedding width: {}", m.embedding_dim)?;
        writeln!(f, "preprocessing: {}", m.preprocess.describe())?;
        writeln!(
            f,
            "tokenizer: {} (context length {}, pad {:?} = id {})",
            m.spec.tokenizer.display(),
            m.tokenizer.context_length(),
            m.spec.pad_token,
            m.tokenizer.pad_id()
        )?;
        writeln!(
            f,
            "int8: {}",
            if vision.int8 || text.int8 {
                "yes"
            } else {
                "no"
            }
        )?;
        writeln!(f, "device: {}", m.device)?;
        writeln!(f, "load + optimise: {} ms", m.load_time.as_millis())?;
        writeln!(f, "self-test: ok")?;
        for line in &self.self_test {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}
