//! The CLIP distributions users download, loaded unmodified: Immich / open_clip layout
//! (fixed batch, int32 tokens, pad id 0, normalised outputs), an open_clip export at 256 px
//! with squash resize, and Xenova fp16 — each against the reference implementation
//! (open_clip / transformers via the committed generator), and against each other.

use std::path::PathBuf;

use crate::common::*;
use cliptag::clip::ModelVariant;
use cliptag::clip::{preprocess, ClipModel, Layout};
use cliptag::ingest::RgbImage;

fn model_dir(name: &str) -> PathBuf {
    repo().join("models").join(name)
}

fn load(name: &str, variant: ModelVariant) -> ClipModel {
    ClipModel::load(&model_dir(name), variant, 1).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn immich() -> serde_json::Value {
    json(&reference_dir().join("immich.json"))
}

fn frame_rgb(f: &serde_json::Value) -> RgbImage {
    let (w, h) = (
        f["width"].as_u64().unwrap() as u32,
        f["height"].as_u64().unwrap() as u32,
    );
    RgbImage::new(
        w,
        h,
        std::fs::read(reference_dir().join(f["rgb"].as_str().unwrap())).unwrap(),
    )
    .unwrap()
}

/// The five reference frames (counted, so a loop over them cannot pass on none).
fn frames() -> Vec<serde_json::Value> {
    let frames = json(&reference_dir().join("frames.json"))["frames"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(frames.len(), 5, "reference frames");
    frames
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn immich_layout_is_detected_and_read_from_its_configs() {
    let model = load("tiny-clip-immich", ModelVariant::Fp32);
    assert_eq!(model.spec.layout, Layout::Immich);
    assert_eq!(
        model.tokenizer.pad_id(),
        0,
        "pad token comes from textual/tokenizer_config.json"
    );
    assert_eq!(model.tokenizer.context_length(), 77);
    assert_eq!(model.embedding_dim, 24);
    let (vision, text) = model.graph_info().unwrap();
    assert_eq!(
        vision.inputs[0],
        ("image".into(), "F32".into(), "[1, 3, 224, 224]".into())
    );
    assert_eq!(
        text.inputs[0],
        ("text".into(), "I32".into(), "[1, 77]".into())
    );
}

#[test]
fn immich_token_ids_match_open_clip() {
    let model = load("tiny-clip-immich", ModelVariant::Fp32);
    let reference = immich();
    let captions = reference["captions"].as_array().unwrap();
    assert!(captions.len() >= 40);
    for c in captions {
        let text = c["text"].as_str().unwrap();
        assert_eq!(
            model.tokenize(text).unwrap(),
            ids(&c["ids"]),
            "open_clip ids differ for {text:?}"
        );
    }
}

#[test]
fn immich_embeddings_match_the_reference_fp32_and_int8() {
    let reference = immich();
    let texts: Vec<String> = reference["captions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    for (dir, key, text_bound, image_bound) in [
        ("tiny-clip-immich", "embedding_fp32", 0.9999, 0.9999),
        ("tiny-clip-immich-int8", "embedding_int8", 0.998, 0.999),
    ] {
        let model = load(dir, ModelVariant::Fp32);
        // Fixed batch of 1: the encoder runs a batch of many as that many single runs.
        let got = model.embed_texts(&texts).unwrap();
        for (c, (_, e)) in reference["captions"].as_array().unwrap().iter().zip(&got) {
            let cos = cosine(e, &floats(&c[key]));
            assert!(
                cos >= text_bound,
                "{dir}: text cosine {cos} for {:?}",
                c["text"]
            );
        }
        for (f, r) in frames().iter().zip(reference["frames"].as_array().unwrap()) {
            assert_eq!(f["name"], r["name"]);
            let e = model.embed_frames(&[&frame_rgb(f)]).unwrap();
            let cos = cosine(&e[0], &floats(&r[key]));
            assert!(
                cos >= image_bound,
                "{dir}: image cosine {cos} for {}",
                f["name"]
            );
        }
    }
}

#[test]
fn open_clip_shortest_edge_preprocessing_matches_on_real_frames() {
    let model = load("tiny-clip-immich", ModelVariant::Fp32);
    for f in frames() {
        let name = f["name"].as_str().unwrap();
        let reference =
            read_f32s(&reference_dir().join(format!("frames/{name}.openclip_shortest_224.f32")));
        assert_same_tensor(
            name,
            &preprocess(&frame_rgb(&f), &model.preprocess),
            &reference,
        );
    }
}

#[test]
fn the_two_layouts_of_the_same_weights_agree() {
    let xenova = load("tiny-clip", ModelVariant::Fp32);
    let immich = load("tiny-clip-immich", ModelVariant::Fp32);
    assert_eq!(xenova.embedding_dim, immich.embedding_dim);
    for f in frames() {
        // Same pixels into both graphs (the layouts' own recipes crop bikes one pixel apart).
        let pixels = read_f32s(&reference_dir().join(f["pixel_values"].as_str().unwrap()));
        let a = xenova.embed_pixels(std::slice::from_ref(&pixels)).unwrap();
        let b = immich.embed_pixels(&[pixels]).unwrap();
        assert!(cosine(&a[0], &b[0]) >= 0.9999, "{}", f["name"]);
    }
    let texts: Vec<String> = ["a dog on the sofa", "a person carrying a ladder", "car"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for ((_, a), (_, b)) in xenova
        .embed_texts(&texts)
        .unwrap()
        .iter()
        .zip(immich.embed_texts(&texts).unwrap().iter())
    {
        assert!(cosine(a, b) >= 0.9999);
    }
}

#[test]
fn open_clip_256_squash_model_matches_the_reference() {
    let model = load("tiny-openclip-256", ModelVariant::Fp32);
    let reference = json(&reference_dir().join("openclip256.json"));
    assert_eq!(model.embedding_dim, 20);
    assert_eq!(model.preprocess.output_size(), (256, 256));
    let by_name: std::collections::HashMap<String, serde_json::Value> = frames()
        .into_iter()
        .map(|f| (f["name"].as_str().unwrap().to_string(), f))
        .collect();
    for r in reference["frames"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        let ours = preprocess(&frame_rgb(&by_name[name]), &model.preprocess);
        assert_same_tensor(
            name,
            &ours,
            &read_f32s(&reference_dir().join(r["pixel_values"].as_str().unwrap())),
        );
        let e = model.embed_pixels(&[ours]).unwrap();
        assert!(cosine(&e[0], &floats(&r["embedding"])) >= 0.9999, "{name}");
    }
    let captions = reference["captions"].as_array().unwrap();
    let texts: Vec<String> = captions
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    for (c, (got_ids, e)) in captions.iter().zip(model.embed_texts(&texts).unwrap()) {
        assert_eq!(got_ids, ids(&c["ids"]), "{:?}", c["text"]);
        assert!(
            cosine(&e, &floats(&c["embedding"])) >= 0.9999,
            "{:?}",
            c["text"]
        );
    }
}

#[test]
fn xenova_fp16_is_widened_and_matches_fp32_reference() {
    let model = load("tiny-clip", ModelVariant::Fp16);
    assert!(model.spec.vision.ends_with("vision_model_fp16.onnx"));
    for f in frames() {
        let pixels = read_f32s(&reference_dir().join(f["pixel_values"].as_str().unwrap()));
        let e = model.embed_pixels(&[pixels]).unwrap();
        assert!(
            cosine(&e[0], &floats(&f["image_embeds"])) >= 0.999,
            "{}",
            f["name"]
        );
    }
    let captions = json(&reference_dir().join("captions.json"))["captions"]
        .as_array()
        .unwrap()
        .clone();
    let texts: Vec<String> = captions
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    for (c, (_, e)) in captions.iter().zip(model.embed_texts(&texts).unwrap()) {
        assert!(
            cosine(&e, &floats(&c["text_embeds"])) >= 0.999,
            "{:?}",
            c["text"]
        );
    }
}

#[test]
fn image_and_text_widths_that_differ_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mixed");
    for (from, rel) in [
        ("tiny-clip-immich", "visual/model.onnx"),
        ("tiny-clip-immich", "visual/preprocess_cfg.json"),
        ("tiny-openclip-256", "textual/model.onnx"),
        ("tiny-openclip-256", "textual/tokenizer.json"),
        ("tiny-openclip-256", "textual/tokenizer_config.json"),
        ("tiny-openclip-256", "config.json"),
    ] {
        std::fs::create_dir_all(dir.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(model_dir(from).join(rel), dir.join(rel)).unwrap();
    }
    let o = cliptag()
        .args(["model", "check", "--model", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(78), "{err}");
    assert!(
        err.contains("image embeddings are 24 wide but text embeddings 20"),
        "{err}"
    );
}

#[test]
fn model_check_describes_each_layout() {
    let o = cliptag()
        .args([
            "model",
            "check",
            "--model",
            model_dir("tiny-openclip-256").to_str().unwrap(),
            "--threads",
            "1",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for needle in [
        "layout: immich",
        "input  image: F32 [1, 3, 256, 256]",
        "squash → 256x256",
        "pad \"!\" = id 0",
        "embedding width: 20",
        "self-test: ok",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let o = cliptag()
        .args([
            "model",
            "check",
            "--model",
            model_dir("tiny-clip-immich-int8").to_str().unwrap(),
            "--threads",
            "1",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("int8: yes") && out.contains("HalfEven"),
        "{out}"
    );
    // Forcing the wrong layout names what is missing.
    let o = cliptag()
        .args([
            "model",
            "check",
            "--model",
            model_dir("tiny-clip-immich").to_str().unwrap(),
            "--layout",
            "xenova",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(78));
    assert!(err.contains("onnx/vision_model.onnx"), "{err}");
}

#[test]
fn text_models_with_an_attention_mask_input_are_fed_one() {
    use prost::Message;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("masked");
    for rel in [
        "onnx/vision_model.onnx",
        "onnx/text_model.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "config.json",
    ] {
        std::fs::create_dir_all(dir.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(model_dir("tiny-clip").join(rel), dir.join(rel)).unwrap();
    }
    // Some exports declare `attention_mask` beside `input_ids` (int64, same shape).
    let path = dir.join("onnx/text_model.onnx");
    let mut onnx =
        tract_onnx::pb::ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let graph = onnx.graph.as_mut().unwrap();
    let mut mask = graph.input[0].clone();
    mask.name = "attention_mask".into();
    graph.input.push(mask);
    std::fs::write(&path, onnx.encode_to_vec()).unwrap();

    let masked = ClipModel::load(&dir, ModelVariant::Fp32, 1).unwrap();
    assert_eq!(masked.graph_info().unwrap().1.inputs.len(), 2);
    let plain = load("tiny-clip", ModelVariant::Fp32);
    let texts = vec!["a dog on the sofa".to_string(), "car".to_string()];
    for ((ids_a, a), (ids_b, b)) in masked
        .embed_texts(&texts)
        .unwrap()
        .iter()
        .zip(plain.embed_texts(&texts).unwrap().iter())
    {
        assert_eq!(ids_a, ids_b);
        assert!(cosine(a, b) > 0.99999);
    }
}
