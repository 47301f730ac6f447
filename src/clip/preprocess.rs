//! The one preprocessing function every binary uses: RGB frame → normalised CHW tensor.
//!
//! It reproduces what Hugging Face's `CLIPImageProcessor` does through PIL: resize the
//! shortest edge with PIL's separable, antialiased bicubic (or bilinear) filter in 8-bit
//! fixed point (the horizontal pass is rounded to u8 before the vertical one, as PIL does),
//! centre-crop with integer division, rescale by 1/255 and normalise in f32. Matching PIL
//! bit for bit is the point: CLIP was trained on PIL-resized images.
//!
//! open_clip's recipe (Immich and open_clip exports) differs in two ways it also states:
//! `resize_mode = "squash"` resizes straight to the square input size, and its centre crop
//! rounds the offset half-to-even (torchvision) where transformers floors it.

use serde::Deserialize;

use crate::ingest::RgbImage;

/// How to turn a frame into the model's input, as the model's processor config says.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    /// Target of the resize: the shortest edge becomes this many pixels.
    pub shortest_edge: u32,
    /// Output size after the centre crop (height, width).
    pub crop: (u32, u32),
    pub do_center_crop: bool,
    pub filter: Filter,
    pub resize_mode: ResizeMode,
    pub crop_rounding: CropRounding,
    pub rescale_factor: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// How the frame is brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// Shortest edge to `shortest_edge`, keeping the aspect ratio, then the centre crop.
    ShortestEdge,
    /// Straight to the crop size, ignoring the aspect ratio (SigLIP-style exports).
    Squash,
}

/// How a centre crop with an odd margin picks its offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropRounding {
    /// transformers: `(h - crop) // 2`.
    Floor,
    /// torchvision: `int(round((h - crop) / 2))`, Python's half-to-even rounding.
    HalfEven,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Bilinear,
    Bicubic,
}

impl Default for PreprocessConfig {
    /// OpenAI CLIP at 224 px.
    fn default() -> Self {
        PreprocessConfig {
            shortest_edge: 224,
            crop: (224, 224),
            do_center_crop: true,
            filter: Filter::Bicubic,
            resize_mode: ResizeMode::ShortestEdge,
            crop_rounding: CropRounding::Floor,
            rescale_factor: 1.0 / 255.0,
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_55, 0.261_302_6, 0.275_777_1],
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    Square(u32),
    Shortest { shortest_edge: u32 },
    HeightWidth { height: u32, width: u32 },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OpenClipSize {
    Square(u32),
    Pair([u32; 2]),
}

#[derive(Deserialize)]
struct OpenClipPreprocess {
    size: OpenClipSize,
    mean: [f32; 3],
    std: [f32; 3],
    interpolation: Option<String>,
    resize_mode: Option<String>,
}

#[derive(Deserialize)]
struct HfProcessorConfig {
    size: Option<SizeSpec>,
    crop_size: Option<SizeSpec>,
    do_center_crop: Option<bool>,
    resample: Option<u32>,
    rescale_factor: Option<f32>,
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
}

impl PreprocessConfig {
    /// Parse Hugging Face's `preprocessor_config.json` dialect.
    pub fn from_hf_json(text: &str) -> Result<PreprocessConfig, String> {
        let raw: HfProcessorConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut cfg = PreprocessConfig::default();
        match raw.size {
            Some(SizeSpec::Square(s)) | Some(SizeSpec::Shortest { shortest_edge: s }) => {
                cfg.shortest_edge = s
            }
            Some(SizeSpec::HeightWidth { height, width }) => {
                if height != width {
                    return Err(format!(
                        "non-square resize {height}x{width} is not supported"
                    ));
                }
                cfg.shortest_edge = height
            }
            None => {}
        }
        cfg.crop = match raw.crop_size {
            Some(SizeSpec::Square(s)) | Some(SizeSpec::Shortest { shortest_edge: s }) => (s, s),
            Some(SizeSpec::HeightWidth { height, width }) => (height, width),
            None => (cfg.shortest_edge, cfg.shortest_edge),
        };
        cfg.do_center_crop = raw.do_center_crop.unwrap_or(true);
        cfg.filter = match raw.resample.unwrap_or(3) {
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            other => {
                return Err(format!(
                    "resample={other} is not supported (expected 2 bilinear or 3 bicubic)"
                ))
            }
        };
        if let Some(f) = raw.rescale_factor {
            cfg.rescale_factor = f;
        }
        if let Some(m) = raw.image_mean {
            cfg.mean = m;
        }
        if let Some(s) = raw.image_std {
            if s.iter().any(|v| *v <= 0.0) {
                return Err("image_std must be positive".into());
            }
            cfg.std = s;
        }
        if cfg.shortest_edge == 0 || cfg.crop.0 == 0 || cfg.crop.1 == 0 {
            return Err("sizes must be positive".into());
        }
        Ok(cfg)
    }

    /// Parse open_clip's `preprocess_cfg.json` dialect (Immich's `visual/preprocess_cfg.json`):
    /// `size` (int or [h, w]), `mean`, `std`, `interpolation`, `resize_mode`.
    pub fn from_open_clip_json(text: &str) -> Result<PreprocessConfig, String> {
        let raw: OpenClipPreprocess = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let (h, w) = match raw.size {
            OpenClipSize::Square(s) => (s, s),
            OpenClipSize::Pair([h, w]) => (h, w),
        };
        if h != w {
            return Err(format!("non-square input size {h}x{w} is not supported"));
        }
        let filter = match raw.interpolation.as_deref().unwrap_or("bicubic") {
            "bicubic" => Filter::Bicubic,
            "bilinear" => Filter::Bilinear,
            other => {
                return Err(format!(
                    "interpolation {other:?} is not supported (expected bicubic or bilinear)"
                ))
            }
        };
        let resize_mode = match raw.resize_mode.as_deref().unwrap_or("shortest") {
            "shortest" => ResizeMode::ShortestEdge,
            "squash" => ResizeMode::Squash,
            other => {
                return Err(format!(
                    "resize_mode {other:?} is not supported (expected shortest or squash)"
                ))
            }
        };
        if raw.std.iter().any(|v| *v <= 0.0) {
            return Err("std must be positive".into());
        }
        if h == 0 {
            return Err("size must be positive".into());
        }
        Ok(PreprocessConfig {
            shortest_edge: h,
            crop: (h, w),
            do_center_crop: true,
            filter,
            resize_mode,
            crop_rounding: CropRounding::HalfEven,
            rescale_factor: 1.0 / 255.0,
            mean: raw.mean,
            std: raw.std,
        })
    }

    /// One line for logs and `model check`.
    pub fn describe(&self) -> String {
        let (h, w) = self.crop;
        let resize = match self.resize_mode {
            ResizeMode::ShortestEdge => format!(
                "shortest edge → {} ({:?}), centre crop {h}x{w} ({:?} offset)",
                self.shortest_edge, self.filter, self.crop_rounding
            ),
            ResizeMode::Squash => format!("squash → {h}x{w} ({:?})", self.filter),
        };
        format!(
            "{resize}, ×{:.6}, mean {:?}, std {:?}",
            self.rescale_factor, self.mean, self.std
        )
    }

    /// Side lengths of the tensor [`preprocess`] returns: (height, width).
    pub fn output_size(&self) -> (u32, u32) {
        self.crop
    }
}

/// RGB frame → `[3, H, W]` f32 tensor, flattened channel-major.
pub fn preprocess(image: &RgbImage, cfg: &PreprocessConfig) -> Vec<f32> {
    let (w, h) = (image.width, image.height);
    let (crop_h, crop_w) = cfg.crop;
    let resized = match cfg.resize_mode {
        ResizeMode::Squash => resize(image, crop_w, crop_h, cfg.filter),
        ResizeMode::ShortestEdge => {
            let (new_w, new_h) = resize_target(w, h, cfg.shortest_edge);
            let resized = resize(image, new_w, new_h, cfg.filter);
            if cfg.do_center_crop {
                center_crop(&resized, crop_w, crop_h, cfg.crop_rounding)
            } else {
                resized
            }
        }
    };
    let (out_w, out_h) = (resized.width as usize, resized.height as usize);
    let plane = out_w * out_h;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in resized.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            // f64 rescale then f32 normalise mirrors numpy's dtype promotion in transformers.
            let v = (px[c] as f64 * cfg.rescale_factor as f64) as f32;
            out[c * plane + i] = (v - cfg.mean[c]) / cfg.std[c];
        }
    }
    out
}

/// transformers' `get_resize_output_image_size`: the long side is truncated, not rounded.
fn resize_target(w: u32, h: u32, shortest: u32) -> (u32, u32) {
    if w <= h {
        (shortest, (shortest as f64 * h as f64 / w as f64) as u32)
    } else {
        ((shortest as f64 * w as f64 / h as f64) as u32, shortest)
    }
}

fn crop_offset(margin: i64, rounding: CropRounding) -> i64 {
    match rounding {
        CropRounding::Floor => margin.div_euclid(2),
        // margin/2 is either whole or exactly .5; Python rounds .5 to the even neighbour.
        CropRounding::HalfEven => {
            let floor = margin.div_euclid(2);
            if margin.rem_euclid(2) == 0 || floor.rem_euclid(2) == 0 {
                floor
            } else {
                floor + 1
            }
        }
    }
}

/// Centre crop; pads with black when the image is smaller than the crop.
pub fn center_crop(image: &RgbImage, crop_w: u32, crop_h: u32, rounding: CropRounding) -> RgbImage {
    let (w, h) = (image.width as i64, image.height as i64);
    let top = crop_offset(h - crop_h as i64, rounding);
    let left = crop_offset(w - crop_w as i64, rounding);
    let mut data = vec![0u8; crop_w as usize * crop_h as usize * 3];
    for y in 0..crop_h as i64 {
        let sy = y + top;
        if sy < 0 || sy >= h {
            continue;
        }
        for x in 0..crop_w as i64 {
            let sx = x + left;
            if sx < 0 || sx >= w {
                continue;
            }
            let src = ((sy * w + sx) * 3) as usize;
            let dst = ((y * crop_w as i64 + x) * 3) as usize;
            data[dst..dst + 3].copy_from_slice(&image.data[src..src + 3]);
        }
    }
    RgbImage {
        width: crop_w,
        height: crop_h,
        data,
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn filter_weight(filter: Filter, x: f64) -> f64 {
    let x = x.abs();
    match filter {
        Filter::Bilinear => {
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
        Filter::Bicubic => {
            const A: f64 = -0.5;
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            } else {
                0.0
            }
        }
    }
}

fn filter_support(filter: Filter) -> f64 {
    match filter {
        Filter::Bilinear => 1.0,
        Filter::Bicubic => 2.0,
    }
}

/// Per output pixel: first input index and fixed-point weights (PIL's `precompute_coeffs`
/// followed by `normalize_coeffs_8bpc`).
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

fn coefficients(in_size: u32, out_size: u32, filter: Filter) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter_support(filter) * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size as usize);
    let mut weights = vec![0i32; out_size as usize * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size as usize {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut total = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter_weight(filter, (x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            total += w;
        }
        for x in 0..n {
            let w = if total != 0.0 { k[x] / total } else { k[x] };
            let fixed = w * (1i64 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coefficients {
        bounds,
        ksize,
        weights,
    }
}

#[inline]
fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// PIL's `ImagingResample` for 8-bit RGB: horizontal pass over the rows the vertical pass
/// needs, then the vertical pass; a pass is skipped when its size does not change.
pub fn resize(image: &RgbImage, out_w: u32, out_h: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = (image.width, image.height);
    let horizontal = coefficients(in_w, out_w, filter);
    let vertical = coefficients(in_h, out_h, filter);
    let need_h = out_w != in_w;
    let need_v = out_h != in_h;
    let first_row = vertical.bounds.first().map(|b| b.0).unwrap_or(0);
    let last_row = vertical
        .bounds
        .last()
        .map(|b| b.0 + b.1)
        .unwrap_or(in_h as usize);

    let (mid, mid_w, row_offset) = if need_h {
        let rows = if need_v {
            first_row..last_row
        } else {
            0..in_h as usize
        };
        let offset = rows.start;
        let mut out = vec![0u8; out_w as usize * rows.len() * 3];
        let in_stride = in_w as usize * 3;
        for (oy, y) in rows.enumerate() {
            let src = &image.data[y * in_stride..(y + 1) * in_stride];
            let dst = &mut out[oy * out_w as usize * 3..(oy + 1) * out_w as usize * 3];
            for (xx, &(xmin, n)) in horizontal.bounds.iter().enumerate() {
                let k = &horizontal.weights[xx * horizontal.ksize..xx * horizontal.ksize + n];
                let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                for (x, &w) in k.iter().enumerate() {
                    let p = (xmin + x) * 3;
                    acc[0] += src[p] as i64 * w as i64;
                    acc[1] += src[p + 1] as i64 * w as i64;
                    acc[2] += src[p + 2] as i64 * w as i64;
                }
                dst[xx * 3] = clip8(acc[0]);
                dst[xx * 3 + 1] = clip8(acc[1]);
                dst[xx * 3 + 2] = clip8(acc[2]);
            }
        }
        (out, out_w as usize, offset)
    } else {
        (image.data.clone(), in_w as usize, 0)
    };
    if !need_v {
        return RgbImage {
            width: mid_w as u32,
            height: in_h,
            data: mid,
        };
    }
    let stride = mid_w * 3;
    let mut out = vec![0u8; stride * out_h as usize];
    for (yy, &(ymin, n)) in vertical.bounds.iter().enumerate() {
        let k = &vertical.weights[yy * vertical.ksize..yy * vertical.ksize + n];
        let dst = &mut out[yy * stride..(yy + 1) * stride];
        for (i, d) in dst.iter_mut().enumerate() {
            let mut acc = 1i64 << (PRECISION_BITS - 1);
            for (y, &w) in k.iter().enumerate() {
                acc += mid[(ymin - row_offset + y) * stride + i] as i64 * w as i64;
            }
            *d = clip8(acc);
        }
    }
    RgbImage {
        width: mid_w as u32,
        height: out_h,
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    ((x + y) % 256) as u8,
                ]);
            }
        }
        RgbImage::new(w, h, data).unwrap()
    }

    #[test]
    fn crop_offsets_floor_or_round_half_even() {
        assert_eq!(crop_offset(174, CropRounding::Floor), 87);
        assert_eq!(crop_offset(1, CropRounding::Floor), 0);
        assert_eq!(crop_offset(1, CropRounding::HalfEven), 0); // round(0.5) == 0
        assert_eq!(crop_offset(3, CropRounding::HalfEven), 2); // round(1.5) == 2
        assert_eq!(crop_offset(5, CropRounding::HalfEven), 2); // round(2.5) == 2
        assert_eq!(crop_offset(5, CropRounding::Floor), 2);
        assert_eq!(crop_offset(7, CropRounding::HalfEven), 4);
    }

    #[test]
    fn parses_open_clip_dialect() {
        let c = PreprocessConfig::from_open_clip_json(
            r#"{"size":[256,256],"mode":"RGB","mean":[0.5,0.5,0.5],"std":[0.5,0.5,0.5],"interpolation":"bicubic","resize_mode":"squash","fill_color":0}"#,
        )
        .unwrap();
        assert_eq!((c.crop, c.resize_mode), ((256, 256), ResizeMode::Squash));
        let c =
            PreprocessConfig::from_open_clip_json(r#"{"size":224,"mean":[0,0,0],"std":[1,1,1]}"#)
                .unwrap();
        assert_eq!(
            (c.shortest_edge, c.resize_mode, c.crop_rounding),
            (224, ResizeMode::ShortestEdge, CropRounding::HalfEven)
        );
        assert!(PreprocessConfig::from_open_clip_json(
            r#"{"size":224,"mean":[0,0,0],"std":[1,1,1],"resize_mode":"longest"}"#
        )
        .is_err());
        let sq = PreprocessConfig {
            resize_mode: ResizeMode::Squash,
            ..PreprocessConfig::default()
        };
        let img = RgbImage::new(400, 100, [9u8, 9, 9].repeat(400 * 100)).unwrap();
        assert_eq!(preprocess(&img, &sq).len(), 3 * 224 * 224);
    }

    #[test]
    fn shortest_edge_target_truncates_like_transformers() {
        assert_eq!(resize_target(1280, 720, 224), (398, 224));
        assert_eq!(resize_target(480, 640, 224), (224, 298));
        assert_eq!(resize_target(300, 300, 224), (224, 224));
    }

    #[test]
    fn uniform_image_stays_uniform() {
        let img = RgbImage::new(97, 61, [10u8, 200, 77].repeat(97 * 61)).unwrap();
        let out = resize(&img, 40, 23, Filter::Bicubic);
        assert!(out.data.chunks(3).all(|p| p == [10, 200, 77]));
    }

    #[test]
    fn identity_size_is_a_copy() {
        let img = gradient(50, 30);
        assert_eq!(resize(&img, 50, 30, Filter::Bicubic), img);
    }

    #[test]
    fn output_is_chw_normalised() {
        let img = RgbImage::new(400, 300, [255u8, 0, 128].repeat(400 * 300)).unwrap();
        let cfg = PreprocessConfig::default();
        let t = preprocess(&img, &cfg);
        assert_eq!(t.len(), 3 * 224 * 224);
        let r = (1.0 - cfg.mean[0]) / cfg.std[0];
        let g = (0.0 - cfg.mean[1]) / cfg.std[1];
        assert!((t[0] - r).abs() < 1e-6 && (t[224 * 224] - g).abs() < 1e-6);
    }

    #[test]
    fn parses_both_hf_size_dialects() {
        let new = r#"{"size":{"shortest_edge":256},"crop_size":{"height":256,"width":256},"resample":3,
            "image_mean":[0.5,0.5,0.5],"image_std":[0.5,0.5,0.5],"rescale_factor":0.00392156862745098}"#;
        let c = PreprocessConfig::from_hf_json(new).unwrap();
        assert_eq!(
            (c.shortest_edge, c.crop, c.mean),
            (256, (256, 256), [0.5; 3])
        );
        let old = r#"{"size":224,"crop_size":224,"resample":3}"#;
        let c = PreprocessConfig::from_hf_json(old).unwrap();
        assert_eq!((c.shortest_edge, c.crop), (224, (224, 224)));
        assert!(PreprocessConfig::from_hf_json(r#"{"resample":0}"#).is_err());
    }
}
