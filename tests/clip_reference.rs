//! CLIP under tract against the reference implementation's outputs (transformers fp32,
//! onnxruntime for the int8 files), on the committed tiny model of the real architecture.

use crate::common::*;
use cliptag::clip::{preprocess, ClipModel, ModelVariant};
use cliptag::ingest::RgbImage;

/// The 57 reference captions of the generator (models/generate/generate.py).
fn captions() -> Vec<serde_json::Value> {
    let captions = json(&reference_dir().join("captions.json"))["captions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(captions.len(), 57, "reference captions");
    captions
}

/// The reference frames: two each of bikes and carphone, one of bigbuckbunny (the
/// generator's README); loops over them would pass on an empty list, so the count is held.
fn frames() -> Vec<serde_json::Value> {
    let frames = json(&reference_dir().join("frames.json"))["frames"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(frames.len(), 5, "reference frames");
    frames
}

fn load(variant: ModelVariant) -> ClipModel {
    ClipModel::load(&tiny_model(), variant, 1).expect("tiny model loads")
}

#[test]
fn token_ids_equal_transformers() {
    let model = load(ModelVariant::Fp32);
    let caps = captions();
    assert!(caps.len() >= 40);
    let mut long = 0;
    for c in &caps {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = model.tokenize(text).unwrap();
        assert_eq!(got, want, "ids differ for {text:?}");
        if want[76] != 49407 || want.iter().filter(|&&t| t == 49407).count() == 1 {
            long += 1;
        }
    }
    assert!(
        long >= 3,
        "the caption set must include texts longer than 77 tokens"
    );
}

fn check_text(variant: ModelVariant, key: &str, bound: f64) -> f64 {
    check_text_of(&load(variant), key, bound)
}

fn check_text_of(model: &ClipModel, key: &str, bound: f64) -> f64 {
    let variant = model.spec.variant;
    let caps = captions();
    let texts: Vec<String> = caps
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let got = model.embed_texts(&texts).unwrap();
    let mut worst = 1.0f64;
    for (c, (_, e)) in caps.iter().zip(&got) {
        assert!((e.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        let cos = cosine(e, &floats(&c[key]));
        assert!(
            cos >= bound,
            "{variant:?} {key} cosine {cos} < {bound} for {:?}",
            c["text"]
        );
        worst = worst.min(cos);
    }
    worst
}

/// `cliptag model quantize` on the fixture's fp32 files: the int8 encoders it writes load,
/// run on the fused int8 path, and stay within the same bounds of transformers' fp32
/// embeddings as onnxruntime's own int8 files.
#[test]
fn our_int8_export_matches_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("int8");
    let report = cliptag::clip::quantize_dir::quantize_model_dir(&tiny_model(), &out).unwrap();
    assert_eq!(report.files.len(), 2);
    for (path, layers, _, _) in &report.files {
        assert!(
            *layers >= 12,
            "{} has only {layers} int8 layers",
            path.display()
        );
    }
    // The default variant picks the new int8 files.
    let model = ClipModel::load(&out, ModelVariant::Auto, 1).unwrap();
    assert_eq!(model.spec.variant, ModelVariant::Quantized);
    let (vision, text) = model.graph_info().unwrap();
    assert!(vision.int8 && text.int8);
    check_images_of(&model, "image_embeds", 0.999);
    // 0.997 for the 32-wide text tower (see below: its activations' dynamic quantization
    // alone costs ~0.002); symmetric weights give up one more step on its skewed columns
    // (worst caption 0.9979). On a ViT-B/32-sized export the same rewrite measures 0.99994
    // (vision) and 0.9995 (text) against fp32 under onnxruntime, above quantize_dynamic's
    // 0.99988 and 0.9994.
    check_text_of(&model, "text_embeds", 0.997);
    // An output directory in use is refused, naming it.
    let err = cliptag::clip::quantize_dir::quantize_model_dir(&tiny_model(), &out).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn text_embeddings_fp32_match_transformers() {
    check_text(ModelVariant::Fp32, "text_embeds", 0.9999);
}

#[test]
fn text_embeddings_int8_match_reference() {
    // The bound for the tiny text tower is 0.998, not 0.999: with a 32-wide hidden state,
    // dynamic activation quantization alone costs that much (onnxruntime's own int8 run of
    // the same file reaches only 0.9981 against fp32; tract reaches 0.9987, and the two int8
    // runtimes agree to 0.9988 because they round activations differently). The vision
    // tower (64 wide) and ViT-B/32-sized exports meet 0.999.
    check_text(ModelVariant::Quantized, "text_embeds_ort_int8", 0.998);
    check_text(ModelVariant::Quantized, "text_embeds", 0.998);
}

fn check_images(variant: ModelVariant, key: &str, bound: f64) {
    check_images_of(&load(variant), key, bound)
}

fn check_images_of(model: &ClipModel, key: &str, bound: f64) {
    let variant = model.spec.variant;
    for f in frames() {
        let pixels = read_f32s(&reference_dir().join(f["pixel_values"].as_str().unwrap()));
        let got = model.embed_pixels(&[pixels]).unwrap();
        let cos = cosine(&got[0], &floats(&f[key]));
        assert!(
            cos >= bound,
            "{variant:?} {key} cosine {cos} < {bound} for {}",
            f["name"]
        );
    }
}

#[test]
fn image_embeddings_fp32_match_transformers() {
    check_images(ModelVariant::Fp32, "image_embeds", 0.9999);
}

#[test]
fn image_embeddings_int8_match_reference() {
    check_images(ModelVariant::Quantized, "image_embeds_ort_int8", 0.999);
    check_images(ModelVariant::Quantized, "image_embeds", 0.999);
}

#[test]
fn batches_give_the_same_embeddings_as_single_images() {
    let model = load(ModelVariant::Fp32);
    let pixels: Vec<Vec<f32>> = frames()
        .iter()
        .map(|f| read_f32s(&reference_dir().join(f["pixel_values"].as_str().unwrap())))
        .collect();
    let batched = model.embed_pixels(&pixels).unwrap();
    assert_eq!(batched.len(), pixels.len());
    for (p, b) in pixels.iter().zip(&batched) {
        let single = model.embed_pixels(std::slice::from_ref(p)).unwrap();
        assert!(cosine(&single[0], b) > 0.99999);
    }
}

/// Our preprocessing on real decoded frames vs transformers' CLIPImageProcessor (PIL path).
/// Bound met: identical 8-bit resize (PIL's fixed-point bicubic reproduced), so the tensors
/// differ only by float rounding: max abs diff ≤ 1e-5 and cosine ≥ 0.999999.
#[test]
fn preprocessing_matches_clip_image_processor_on_real_frames() {
    let model = load(ModelVariant::Fp32);
    for f in frames() {
        let (w, h) = (
            f["width"].as_u64().unwrap() as u32,
            f["height"].as_u64().unwrap() as u32,
        );
        let rgb = std::fs::read(reference_dir().join(f["rgb"].as_str().unwrap())).unwrap();
        let image = RgbImage::new(w, h, rgb).expect("frame size matches");
        let ours = preprocess(&image, &model.preprocess);
        let reference = read_f32s(&reference_dir().join(f["pixel_values"].as_str().unwrap()));
        assert_same_tensor(f["name"].as_str().unwrap(), &ours, &reference);
    }
}

/// A daemon holds the text tower only while it embeds labels: loaded on first use, dropped,
/// loaded again from the same file with the same embeddings, and refused if the file changed
/// on disk in between (its embeddings would be stored under the old model id).
#[test]
fn text_tower_loads_when_needed_and_is_released() {
    use cliptag::clip::{ModelSettings, TextTower};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    for entry in walk(&tiny_model()) {
        let to = dir.join(entry.strip_prefix(tiny_model()).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    let model = ClipModel::load_with(
        &ModelSettings::cpu(&dir, ModelVariant::Fp32, 1),
        TextTower::WhenNeeded,
    )
    .unwrap();
    let captions = vec!["a photo of a dog".to_string(), "a red car".to_string()];
    let first = model.embed_texts(&captions).unwrap();
    model.release_text_encoder();
    let again = model.embed_texts(&captions).unwrap();
    for ((_, a), (_, b)) in first.iter().zip(&again) {
        assert!(cliptag::clip::cosine(a, b) >= 0.999_999);
    }
    model.release_text_encoder();
    let text_file = model.spec.text.clone();
    let bytes = std::fs::read(&text_file).unwrap();
    std::fs::write(&text_file, [&bytes[..], b"\0"].concat()).unwrap();
    let err = model.embed_texts(&captions).unwrap_err().to_string();
    assert!(err.contains("changed on disk"), "{err}");
    // The vision tower never depended on it.
    assert!(model.embed_pixels(&[vec![0.0; 3 * 224 * 224]]).is_ok());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
