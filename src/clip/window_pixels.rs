//! A window's keyframes → the tensors CLIP runs on: one per keyframe (mean, max), or one
//! super image of all of them (grid). The one place the window path turns pictures into
//! model input, for the daemon and the tuner alike.

use super::preprocess::{center_crop, preprocess, resize, CropRounding, Filter, PreprocessConfig};
use crate::ingest::RgbImage;
use crate::keyframes::Aggregation;

/// The preprocessed tensors of a window's keyframes (in time order) for `aggregation`.
pub fn window_pixels(
    keyframes: &[&RgbImage],
    aggregation: Aggregation,
    recipe: &PreprocessConfig,
) -> Vec<Vec<f32>> {
    match aggregation {
        Aggregation::Grid => vec![preprocess(&super_image(keyframes, recipe.crop.0), recipe)],
        Aggregation::Mean | Aggregation::Max => keyframes
            .iter()
            .map(|image| preprocess(image, recipe))
            .collect(),
    }
}

/// Tile up to nine frames, in time order, into a square super image for one CLIP pass.
///
/// Each frame is centre-cropped to a square (as CLIP's own preprocessing would) and resized
/// with the same PIL-exact bicubic to `tile` pixels — the model's input side — so the grid
/// is 3·tile (or 2·tile for up to four frames, 1·tile for one) and the model's ordinary
/// preprocessing then shrinks the whole grid to its input: each frame covers a third (or
/// half) of CLIP's view. Unused cells stay black.
pub fn super_image(frames: &[&RgbImage], tile: u32) -> RgbImage {
    let frames = &frames[..frames.len().min(9)];
    let side = match frames.len() {
        0 | 1 => 1,
        2..=4 => 2,
        _ => 3,
    };
    let size = side * tile;
    let mut data = vec![0u8; (size * size * 3) as usize];
    for (n, frame) in frames.iter().enumerate() {
        let short = frame.width.min(frame.height);
        let square = center_crop(frame, short, short, CropRounding::Floor);
        let cell = resize(&square, tile, tile, Filter::Bicubic);
        let (row, col) = (n as u32 / side, n as u32 % side);
        for y in 0..tile {
            let src = (y * tile * 3) as usize;
            let dst = (((row * tile + y) * size + col * tile) * 3) as usize;
            data[dst..dst + (tile * 3) as usize]
                .copy_from_slice(&cell.data[src..src + (tile * 3) as usize]);
        }
    }
    RgbImage {
        width: size,
        height: size,
        data,
    }
}
