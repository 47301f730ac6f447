//! cliptag-tract: our extensions to tract for running CLIP on edge CPUs. Graph passes that
//! replace what tract runs as many small single-threaded steps (an int8 or fp32 linear
//! layer, an attention core, a constant chain, an activation quantizer) with one op and its
//! own kernel; the pool helpers those ops rely on; and the int8 ONNX writer whose graphs
//! the int8 pass fuses ([`int8_export`]).
//!
//! Rules, and why:
//! - tract, rayon, matrixmultiply and small crates only: never GStreamer, SQLite,
//!   tokenizers or the `cliptag` edge crate. The passes work on tract's graphs and the
//!   writer on ONNX protobufs, nothing else (files and model directories are the edge
//!   crate's), so they build and test without the media stack and the tuner can share them.
//! - Each pass stands for an upstream change to tract (its file says which) and leaves
//!   anything it does not match exactly to tract. A fused op gives the values of the graph
//!   it replaces: bit for bit where the arithmetic is exact (int8), within float rounding
//!   otherwise, checked against tract on the committed tiny fixture exports.
//! - Which passes run is data, tract style: [`Pass`], and the lists [`DECLUTTERED`] and
//!   [`OPTIMIZED`] for the two graphs they run on; the edge crate applies a stage's list.
//!   `CLIPTAG_GRAPH_PASSES` turns passes off, to measure them ([`passes`]).
//! - The pool helpers ([`pool`]) live here, not in the edge crate: the fused ops share their
//!   work out only when they run on a rayon pool thread, and `pool` is what puts a tract
//!   run on one and keeps the pool's other threads awake. The two halves of that contract
//!   stay together.
//! - `unsafe` is for the kernels' hand-built strides, uninitialised outputs whose every
//!   element is stored before it is read, and pool tasks writing disjoint parts of one
//!   output (`disjoint::DisjointOut`). Every `unsafe` block says why it holds (a
//!   `// SAFETY:` comment; clippy denies one without), and every `unsafe fn` states its
//!   contract under `# Safety`.
//! - One fused op and its pass per file. What several passes share has a module of its own
//!   (`pattern`: graph matching; `kernel`: kernel choice and timing; `epilogue`: steps
//!   fused after a product; `disjoint`: the shared output; `simd`: instruction-set choice
//!   for hot loops), so no pass imports from another.

#![deny(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod attention;
mod disjoint;
mod epilogue;
pub mod flinear;
pub mod fold;
pub mod int8_export;
mod kernel;
pub mod passes;
mod pattern;
pub mod pool;
pub mod qlinear;
pub mod quantize;
mod simd;
#[cfg(test)]
mod test_support;

pub use passes::{apply_decluttered, apply_optimized, Pass, DECLUTTERED, OPTIMIZED};
