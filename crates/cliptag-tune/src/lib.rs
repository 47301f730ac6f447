//! cliptag-tune (workstation only; the edge build has none of it): adapt CLIP to a user's
//! own labelled videos and write files the daemon loads.
//!
//! ```text
//!                       ┌► clip (frozen, tract) ► cache ─┬► probe   → head file
//!  dataset.csv ► ingest ► keyframes ► preprocess         ├► prompts → label embeddings
//!  (the daemon's own stages, one code path)              └► eval    → metrics, CSV
//!                       └► model (candle) ► finetune → HF weights ► export → model dir
//!                                   (finetune, prompts) ► curves → CSV + PNG
//! ```
//!
//! Rules:
//! - Videos go through the daemon's ingest, preprocessing and keyframe stages, so what is
//!   trained matches what the daemon will compute.
//! - Frozen-encoder embeddings are cached on disk, keyed by model id, sampling, keyframe
//!   settings and the file's identity; a second run decodes nothing.
//! - Everything random (splits, shot subsets, epoch order, dropped patches) is seeded; the
//!   same inputs give the same outputs.
//! - Every file written for the daemon names the model id it belongs to, or is a model
//!   directory of its own.
//! - The binary parses flags and prints; each mode's flags are its settings struct
//!   (`FinetuneSettings`, `PromptSettings`, `DataOptions`), and the work is here:
//!   [`session`] (model, dataset, cache), [`modes`] (probe, prompts), [`eval_run`],
//!   [`finetune`], [`export`].

pub mod curves;
pub mod dataset;
pub mod embed;
pub mod error;
pub mod eval;
pub mod eval_run;
pub mod export;
pub mod finetune;
pub mod model;
pub mod modes;
pub mod probe;
pub mod prompts;
pub mod session;

pub use dataset::{Dataset, Example, Split, TextKind};
pub use embed::{EmbedSettings, EmbeddingCache};
pub use error::TuneError;
pub use modes::{run_probe, run_prompts, ProbeOutcome, PromptsOutcome};
pub use probe::{Labelled, LogisticRegression, ProbeReport};
pub use prompts::{LearnedEmbeddings, PromptSettings};
pub use session::{embed_dataset, zero_shot_embeddings, DataOptions, EmbeddedDataset, Session};
