//! The tuner's integration tests, one binary: real synthetic clips rendered by GStreamer,
//! the tiny CLIP fixture under tract and candle, transformers' reference outputs, and the
//! daemon's own binary scoring with what the tuner wrote.

mod common;

mod tune;
