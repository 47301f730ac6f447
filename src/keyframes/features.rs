//! Cheap frame features for keyframe selection, computed without CLIP.
//!
//! A 16×16 thumbnail (area average) in CIELAB: 768 numbers per frame. A thumbnail keeps the
//! layout of the picture — a ball moving across a static background changes it, while a
//! colour histogram would not — and Lab makes a distance of 1 roughly one just-noticeable
//! colour difference, so thresholds mean the same on dark and bright scenes. Computing it
//! reads each pixel once (about a millisecond for a 720p frame).

use crate::ingest::RgbImage;

pub const THUMB_SIDE: usize = 16;
pub const FEATURE_LEN: usize = THUMB_SIDE * THUMB_SIDE * 3;

/// The Lab thumbnail of a frame, row-major, L a b interleaved.
pub fn thumbnail_lab(image: &RgbImage) -> Vec<f32> {
    let (w, h) = (image.width as usize, image.height as usize);
    let mut sums = vec![0f64; FEATURE_LEN];
    let mut counts = vec![0u32; THUMB_SIDE * THUMB_SIDE];
    for y in 0..h {
        let ty = y * THUMB_SIDE / h.max(1);
        let row = &image.data[y * w * 3..(y + 1) * w * 3];
        for (x, px) in row.chunks_exact(3).enumerate() {
            let cell = ty * THUMB_SIDE + x * THUMB_SIDE / w.max(1);
            counts[cell] += 1;
            for c in 0..3 {
                sums[cell * 3 + c] += srgb_to_linear(px[c]) as f64;
            }
        }
    }
    let mut out = Vec::with_capacity(FEATURE_LEN);
    for (cell, &n) in counts.iter().enumerate() {
        let n = n.max(1) as f64;
        // Averaging happens in linear light, as the eye integrates it.
        let rgb = [
            sums[cell * 3] / n,
            sums[cell * 3 + 1] / n,
            sums[cell * 3 + 2] / n,
        ];
        out.extend_from_slice(&linear_rgb_to_lab(rgb));
    }
    out
}

/// sRGB decoding through a 256-entry table: a powf per channel per pixel would cost more
/// than the rest of the feature put together.
fn srgb_to_linear(v: u8) -> f32 {
    static TABLE: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        std::array::from_fn(|i| {
            let c = i as f32 / 255.0;
            if c <= 0.04045 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        })
    })[v as usize]
}

/// Linear sRGB (D65) → CIE L*a*b*.
fn linear_rgb_to_lab([r, g, b]: [f64; 3]) -> [f32; 3] {
    let x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047;
    let y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
    let z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883;
    let f = |t: f64| {
        if t > 216.0 / 24389.0 {
            t.cbrt()
        } else {
            (24389.0 / 27.0 * t + 16.0) / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    [
        (116.0 * fy - 16.0) as f32,
        (500.0 * (fx - fy)) as f32,
        (200.0 * (fy - fz)) as f32,
    ]
}

/// Root-mean-square difference per feature: for Lab thumbnails, the typical colour
/// difference of a thumbnail cell (ΔE76 / √3).
pub fn feature_distance(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len()).max(1);
    (a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>() / n as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn white_black_and_red_in_lab() {
        let white = thumbnail_lab(&RgbImage::new(32, 32, vec![255; 32 * 32 * 3]).unwrap());
        assert!((white[0] - 100.0).abs() < 0.01 && white[1].abs() < 0.01 && white[2].abs() < 0.01);
        let black = thumbnail_lab(&RgbImage::new(32, 32, vec![0; 32 * 32 * 3]).unwrap());
        assert!(black[0].abs() < 0.01);
        let red = thumbnail_lab(&RgbImage::new(8, 8, [255u8, 0, 0].repeat(64)).unwrap());
        assert!(
            (red[0] - 53.24).abs() < 0.05
                && (red[1] - 80.09).abs() < 0.05
                && (red[2] - 67.20).abs() < 0.05,
            "{:?}",
            &red[..3]
        );
        assert_eq!(white.len(), FEATURE_LEN);
        assert!(feature_distance(&white, &black) > 50.0);
        assert_eq!(feature_distance(&white, &white), 0.0);
    }

    #[test]
    fn layout_changes_show() {
        // The same colours, swapped halves: a histogram would not notice.
        let mut left = Vec::new();
        let mut right = Vec::new();
        for _y in 0..16 {
            for x in 0..16 {
                left.extend_from_slice(if x < 8 { &[255, 255, 255] } else { &[0, 0, 0] });
                right.extend_from_slice(if x < 8 { &[0, 0, 0] } else { &[255, 255, 255] });
            }
        }
        let a = thumbnail_lab(&RgbImage::new(16, 16, left).unwrap());
        let b = thumbnail_lab(&RgbImage::new(16, 16, right).unwrap());
        assert!(feature_distance(&a, &b) > 40.0);
    }
}
