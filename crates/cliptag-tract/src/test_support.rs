//! Shared scaffolding for the passes' tests: a seeded generator, the workspace's committed
//! tiny fixture exports with deterministic inputs for them, and the agreement measure every
//! graph pass is held to.

use std::path::PathBuf;

use tract_onnx::prelude::*;

/// One of the committed tiny-CLIP ONNX files under the workspace's `models/tiny-clip/onnx`.
pub fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/tiny-clip/onnx")
        .join(file)
}

/// The fixture file decluttered with its first input fixed to `input`'s type and shape,
/// the state every pass starts from.
pub fn decluttered(file: &str, input: &Tensor) -> TypedModel {
    let mut model = tract_onnx::onnx()
        .with_ignore_output_shapes(true)
        .with_ignore_value_info(true)
        .model_for_path(fixture(file))
        .unwrap();
    model
        .set_input_fact(
            0,
            InferenceFact::dt_shape(input.datum_type(), input.shape()),
        )
        .unwrap();
    model.into_typed().unwrap().into_decluttered().unwrap()
}

/// Every output of `model`, optimised by tract, on `input`.
pub fn run(model: TypedModel, input: &Tensor) -> Vec<Vec<f32>> {
    let outputs = model
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap()
        .run(tvec![input.clone().into_tvalue()])
        .unwrap();
    outputs
        .iter()
        .map(|out| {
            out.try_as_plain_ram()
                .unwrap()
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        })
        .collect()
}

/// A xorshift64 generator with a fixed seed: the same stream on every run and platform.
pub fn random_bits() -> impl FnMut() -> u64 {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Random pixels in [-1, 1) and token ids for `batch` items, the same on every run. Each
/// item's end-of-text token sits at a different position, so the text tower's pooling is
/// exercised per item.
pub fn inputs(batch: usize) -> (Tensor, Tensor) {
    let mut next = random_bits();
    let pixels: Vec<f32> = (0..batch * 3 * 224 * 224)
        .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect();
    let mut ids: Vec<i64> = (0..batch * 77)
        .map(|_| 1 + (next() >> 40) as i64 % 49_000)
        .collect();
    for item in 0..batch {
        ids[item * 77 + 20 + 37 * item % 56] = 49_407;
    }
    (
        Tensor::from_shape(&[batch, 3, 224, 224], &pixels).unwrap(),
        Tensor::from_shape(&[batch, 77], &ids).unwrap(),
    )
}

/// Cosine (in f64) and largest absolute difference between two outputs.
pub fn agreement(want: &[f32], got: &[f32]) -> (f64, f32) {
    assert_eq!(want.len(), got.len());
    let dot: f64 = want
        .iter()
        .zip(got)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let max_diff = want
        .iter()
        .zip(got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    (dot / (norm(want) * norm(got)), max_diff)
}
