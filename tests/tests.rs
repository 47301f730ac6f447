//! The edge crate's integration tests, one binary (ripgrep's layout: `autotests = false`):
//! one link of GStreamer, tract and SQLite for all of them instead of one per file.
//!
//! Every test drives real parts: GStreamer pipelines on encoded clips, SQLite files in
//! temporary directories, ONNX models under tract, signals to a real child process, an RTSP
//! server on loopback. Tests that cannot run on a machine say why with `#[ignore = ...]`.

mod common;

mod backfill;
mod clip_reference;
mod daemon;
mod device;
mod disk_full;
mod end_to_end;
mod examples;
mod faults;
mod first_hour;
mod http_sources;
mod ingest;
mod keyframes;
mod layouts;
mod model_check;
mod parsers;
mod search;
mod store;
mod supervise;
