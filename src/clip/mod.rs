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
mod encoder;
mod error;
mod identity;
mod layout;
mod model;
pub mod options;
mod preprocess;
pub mod quantize_dir;
mod tokenizer;
mod vectors;
mod window_pixels;

pub use device::Device;
pub use encoder::{GraphInfo, MAX_BATCH};
pub use error::ClipError;
pub use identity::{hash_files, model_id};
pub use layout::{detect, locate, Layout, ModelSpec};
pub use model::{ClipModel, EncodedText, ImageEmbedder, TextTower};
pub use options::{DeviceChoice, LayoutChoice, ModelSettings, ModelVariant};
pub use preprocess::{
    center_crop, preprocess, resize, CropRounding, Filter, PreprocessConfig, ResizeMode,
};
pub use tokenizer::{open_clip_clean, ClipTokenizer, TextCleaning};
pub use vectors::{cosine, dot, l2_normalized};
pub use window_pixels::{super_image, window_pixels};
