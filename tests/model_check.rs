//! `cliptag model check` on the real fixture models, and a precise error for each kind of
//! unusable model directory (real ONNX files edited through tract's own protobuf types).

use std::path::{Path, PathBuf};

use crate::common::*;
use prost::Message;
use tract_onnx::pb::{type_proto, ModelProto};

fn copy_model(to: &Path, skip: &[&str]) -> PathBuf {
    let dir = to.join("model");
    for entry in [
        "onnx/vision_model.onnx",
        "onnx/text_model.onnx",
        "onnx/vision_model_quantized.onnx",
        "onnx/text_model_quantized.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "config.json",
    ] {
        if skip.contains(&entry) {
            continue;
        }
        let dst = dir.join(entry);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(tiny_model().join(entry), dst).unwrap();
    }
    dir
}

fn edit_onnx(path: &Path, edit: impl FnOnce(&mut ModelProto)) {
    let mut model = ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    edit(&mut model);
    std::fs::write(path, model.encode_to_vec()).unwrap();
}

/// `cliptag model check`, on the fp32 files unless `extra` names a variant: the broken-model
/// cases below edit those.
fn check(dir: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let variant: &[&str] = if extra.contains(&"--variant") {
        &[]
    } else {
        &["--variant", "fp32"]
    };
    let o = cliptag()
        .args(["model", "check", "--model", dir.to_str().unwrap()])
        .args(variant)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn expect_error(dir: &Path, extra: &[&str], needles: &[&str]) {
    let (code, _, err) = check(dir, extra);
    assert_eq!(code, Some(78), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

#[test]
fn reports_the_fixture_models() {
    let (code, out, err) = check(&tiny_model(), &["--threads", "1"]);
    assert_eq!(code, Some(0), "{err}");
    for needle in [
        "layout: xenova",
        "input  pixel_values: F32 [batch_size, 3, 224, 224]",
        "input  input_ids: I64",
        "output image_embeds: F32 [batch, 24]",
        "embedding width: 24",
        "shortest edge → 224 (Bicubic)",
        "context length 77, pad \"<|endoftext|>\" = id 49407",
        "int8: no",
        "load + optimise:",
        "self-test: ok",
        "sha256",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // The default, "auto", takes the int8 files when the directory has them.
    for variant in ["quantized", "auto"] {
        let (code, out, err) = check(&tiny_model(), &["--variant", variant, "--threads", "1"]);
        assert_eq!(code, Some(0), "{err}");
        assert!(
            out.contains("int8: yes") && out.contains("vision_model_quantized.onnx"),
            "{out}"
        );
    }
}

#[test]
fn missing_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_model(tmp.path(), &["tokenizer.json"]);
    expect_error(&dir, &[], &["missing the tokenizer", "tokenizer.json"]);

    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_model(tmp.path(), &["onnx/vision_model_quantized.onnx"]);
    expect_error(
        &dir,
        &["--variant", "quantized"],
        &["missing the vision encoder", "vision_model_quantized.onnx"],
    );

    let tmp = tempfile::tempdir().unwrap();
    expect_error(tmp.path(), &[], &["neither onnx/", "visual/"]);
}

#[test]
fn unparseable_preprocessing_config_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_model(tmp.path(), &[]);
    std::fs::write(
        dir.join("preprocessor_config.json"),
        "{\"size\": {\"shortest_edge\": 224},",
    )
    .unwrap();
    expect_error(&dir, &[], &["preprocessor_config.json", "EOF"]);
    std::fs::write(dir.join("preprocessor_config.json"), r#"{"resample": 0}"#).unwrap();
    expect_error(
        &dir,
        &[],
        &["preprocessor_config.json", "resample=0 is not supported"],
    );
}

#[test]
fn wrong_input_name_type_and_rank_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_model(tmp.path(), &[]);
    let vision = dir.join("onnx/vision_model.onnx");
    edit_onnx(&vision, |m| {
        let g = m.graph.as_mut().unwrap();
        g.input[0].name = "images".into();
        for node in &mut g.node {
            for i in &mut node.input {
                if i == "pixel_values" {
                    *i = "images".into();
                }
            }
        }
    });
    expect_error(
        &dir,
        &[],
        &[
            "vision_model.onnx",
            "input is named \"images\", expected \"pixel_values\"",
        ],
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_model(tmp.path(), &[]);
    edit_onnx(&dir.join("onnx/text_model.onnx"), |m| {
        let ty = m.graph.as_mut().unwrap().input[0].r#type.as_mut().unwrap();
        if let Some(type_proto::Value::TensorType(t)) = ty.value.as_mut() {
            t.elem_type = 1; // FLOAT
        }
    });
    expect_error(
        &dir,
        &[],
        &["text_model.onnx", "element type F32, expected I64 or I32"],
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_model(tmp.path(), &[]);
    edit_onnx(&dir.join("onnx/vision_model.onnx"), |m| {
        let ty = m.graph.as_mut().unwrap().input[0].r#type.as_mut().unwrap();
        if let Some(type_proto::Value::TensorType(t)) = ty.value.as_mut() {
            t.shape.as_mut().unwrap().dim.pop();
        }
    });
    expect_error(&dir, &[], &["vision_model.onnx", "has rank 3, expected 4"]);
}

#[test]
fn graphs_tract_cannot_use_say_which_node_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_model(tmp.path(), &[]);
    std::fs::write(
        dir.join("onnx/text_model.onnx"),
        b"\x08\x07garbage that is not an ONNX protobuf",
    )
    .unwrap();
    expect_error(
        &dir,
        &[],
        &["text_model.onnx", "tract cannot use this ONNX graph"],
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_model(tmp.path(), &[]);
    let mut victim = String::new();
    edit_onnx(&dir.join("onnx/vision_model.onnx"), |m| {
        let node = m
            .graph
            .as_mut()
            .unwrap()
            .node
            .iter_mut()
            .find(|n| n.op_type == "Conv")
            .unwrap();
        victim = node.name.clone();
        node.op_type = "ConvFromTheFuture".into();
    });
    expect_error(
        &dir,
        &[],
        &["vision_model.onnx", "ConvFromTheFuture", &victim],
    );
}
