//! Export: Hugging Face CLIP weights (tuned or not) → a model directory in the Xenova layout
//! that the daemon loads, written from Rust (no Python): `onnx/vision_model.onnx`,
//! `onnx/text_model.onnx`, their int8 twins, and the tokenizer / preprocessor / config files.
//!
//! Rules:
//! - The graphs are transformers' CLIPVisionModelWithProjection / CLIPTextModelWithProjection
//!   in opset 17 with the shapes torch's exporter gives (pre-LayerNorm blocks with
//!   `LayerNormalization`, Q·Kᵀ then the scale, QuickGELU as x·σ(1.702x), linear layers as
//!   `MatMul` by a transposed weight + `Add`), so our graph passes recognise them as they
//!   recognise the downloaded files. Initializers keep Hugging Face's parameter names.
//! - Inputs and outputs are the Xenova ones: `pixel_values` [batch_size, 3, H, W] →
//!   `image_embeds`; `input_ids` [batch_size, sequence_length] (i64) → `text_embeds`; the text
//!   tower pools at the first end-of-text token and masks causally for any sequence length.
//! - The int8 files are the fp32 graphs through `cliptag model quantize`'s pass, the form our
//!   fused int8 path runs fastest.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

use super::error::TuneError;
use super::model::{HfClipConfig, HfTowerConfig, TextPooling};

const OPSET: i64 = 17;

/// A graph under construction: nodes in order, initializers, fresh value names.
struct Builder<'w> {
    weights: &'w HashMap<String, Tensor>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    counter: usize,
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

impl<'w> Builder<'w> {
    fn new(weights: &'w HashMap<String, Tensor>) -> Self {
        Builder {
            weights,
            nodes: Vec::new(),
            initializers: Vec::new(),
            counter: 0,
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    fn op(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: out.clone(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attributes,
            ..Default::default()
        });
        out
    }

    fn constant_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        self.initializers.push(TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }

    fn constant_i64(&mut self, hint: &str, dims: &[i64], data: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: dims.to_vec(),
            data_type: DataType::Int64 as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    /// A weight as it is stored, under its Hugging Face name.
    fn weight(&mut self, name: &str) -> Result<String, TuneError> {
        let (dims, data) = self.read(name)?;
        Ok(self.constant_f32(name, &dims, &data))
    }

    fn read(&self, name: &str) -> Result<(Vec<i64>, Vec<f32>), TuneError> {
        let t = self.weights.get(name).ok_or_else(|| TuneError::Model {
            path: name.into(),
            reason: "parameter missing from model.safetensors".into(),
        })?;
        let dims = t.dims().iter().map(|&d| d as i64).collect();
        let data = t
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| TuneError::Model {
                path: name.into(),
                reason: e.to_string(),
            })?;
        Ok((dims, data))
    }

    /// x·Wᵀ (+ b): the weight [out, in] is stored transposed, as torch's exporter does.
    fn linear(&mut self, x: &str, prefix: &str, bias: bool) -> Result<String, TuneError> {
        let (dims, data) = self.read(&format!("{prefix}.weight"))?;
        let (out, inn) = (dims[0] as usize, dims[1] as usize);
        let mut t = vec![0.0f32; data.len()];
        for o in 0..out {
            for i in 0..inn {
                t[i * out + o] = data[o * inn + i];
            }
        }
        let w = self.constant_f32(&format!("{prefix}.weight"), &[inn as i64, out as i64], &t);
        let y = self.op("MatMul", &[x, &w], vec![]);
        if bias {
            let b = self.weight(&format!("{prefix}.bias"))?;
            Ok(self.op("Add", &[&y, &b], vec![]))
        } else {
            Ok(y)
        }
    }

    fn layer_norm(&mut self, x: &str, prefix: &str, eps: f64) -> Result<String, TuneError> {
        let w = self.weight(&format!("{prefix}.weight"))?;
        let b = self.weight(&format!("{prefix}.bias"))?;
        Ok(self.op(
            "LayerNormalization",
            &[x, &w, &b],
            vec![attr_int("axis", -1), attr_float("epsilon", eps as f32)],
        ))
    }

    /// One pre-LayerNorm transformer block; `mask` is added to the attention scores.
    fn block(
        &mut self,
        x: &str,
        prefix: &str,
        c: &HfTowerConfig,
        mask: Option<&str>,
    ) -> Result<String, TuneError> {
        let heads = c.num_attention_heads as i64;
        let head_dim = (c.hidden_size / c.num_attention_heads) as i64;
        let h = self.layer_norm(x, &format!("{prefix}.layer_norm1"), c.layer_norm_eps)?;
        let attn = format!("{prefix}.self_attn");
        let q = self.linear(&h, &format!("{attn}.q_proj"), true)?;
        let k = self.linear(&h, &format!("{attn}.k_proj"), true)?;
        let v = self.linear(&h, &format!("{attn}.v_proj"), true)?;
        // [B, S, D] → [B, S, H, hd]; 0 copies the input's batch and sequence sizes.
        let split = self.constant_i64("split_heads", &[4], &[0, 0, heads, head_dim]);
        let q = self.op("Reshape", &[&q, &split], vec![]);
        let q = self.op("Transpose", &[&q], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let k = self.op("Reshape", &[&k, &split], vec![]);
        let k = self.op("Transpose", &[&k], vec![attr_ints("perm", &[0, 2, 3, 1])]);
        let v = self.op("Reshape", &[&v, &split], vec![]);
        let v = self.op("Transpose", &[&v], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let scores = self.op("MatMul", &[&q, &k], vec![]);
        let scale_name = self.fresh("attention_scale");
        let scale = self.constant_f32(&scale_name, &[], &[(head_dim as f32).powf(-0.5)]);
        let mut scores = self.op("Mul", &[&scores, &scale], vec![]);
        if let Some(mask) = mask {
            scores = self.op("Add", &[&scores, mask], vec![]);
        }
        let probs = self.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let context = self.op("MatMul", &[&probs, &v], vec![]);
        let context = self.op(
            "Transpose",
            &[&context],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        );
        let merge = self.constant_i64("merge_heads", &[3], &[0, 0, c.hidden_size as i64]);
        let context = self.op("Reshape", &[&context, &merge], vec![]);
        let out = self.linear(&context, &format!("{attn}.out_proj"), true)?;
        let x = self.op("Add", &[x, &out], vec![]);
        let h = self.layer_norm(&x, &format!("{prefix}.layer_norm2"), c.layer_norm_eps)?;
        let h = self.linear(&h, &format!("{prefix}.mlp.fc1"), true)?;
        let h = if c.hidden_act == "quick_gelu" {
            let k_name = self.fresh("quick_gelu_k");
            let k = self.constant_f32(&k_name, &[], &[1.702]);
            let scaled = self.op("Mul", &[&h, &k], vec![]);
            let gate = self.op("Sigmoid", &[&scaled], vec![]);
            self.op("Mul", &[&h, &gate], vec![])
        } else {
            self.op("Gelu", &[&h], vec![])
        };
        let h = self.linear(&h, &format!("{prefix}.mlp.fc2"), true)?;
        Ok(self.op("Add", &[&x, &h], vec![]))
    }

    fn finish(
        self,
        name: &str,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
    ) -> ModelProto {
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "cliptag-tune export".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                name: name.into(),
                node: self.nodes,
                initializer: self.initializers,
                input: inputs,
                output: outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

fn value_info(name: &str, elem: DataType, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| tensor_shape_proto::Dimension {
                            value: Some(match d {
                                Ok(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                                Err(p) => {
                                    tensor_shape_proto::dimension::Value::DimParam(p.to_string())
                                }
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// CLIPVisionModelWithProjection: `pixel_values` → `image_embeds`.
pub fn vision_graph(
    config: &HfClipConfig,
    weights: &HashMap<String, Tensor>,
) -> Result<ModelProto, TuneError> {
    let c = &config.vision_config;
    let mut b = Builder::new(weights);
    let d = c.hidden_size as i64;
    let patch = b.weight("vision_model.embeddings.patch_embedding.weight")?;
    let p = c.patch_size as i64;
    let x = b.op(
        "Conv",
        &["pixel_values", &patch],
        vec![
            attr_ints("kernel_shape", &[p, p]),
            attr_ints("strides", &[p, p]),
        ],
    );
    let flat = b.constant_i64("patches_shape", &[3], &[0, d, -1]);
    let x = b.op("Reshape", &[&x, &flat], vec![]);
    let x = b.op("Transpose", &[&x], vec![attr_ints("perm", &[0, 2, 1])]);
    // The class token, one per image: Expand to [B, 1, D] with B from the input's shape.
    let class = b.weight("vision_model.embeddings.class_embedding")?;
    let shape = b.op(
        "Shape",
        &["pixel_values"],
        vec![attr_int("start", 0), attr_int("end", 1)],
    );
    let one_d = b.constant_i64("class_tail", &[2], &[1, d]);
    let class_shape = b.op("Concat", &[&shape, &one_d], vec![attr_int("axis", 0)]);
    let class = b.op("Expand", &[&class, &class_shape], vec![]);
    let x = b.op("Concat", &[&class, &x], vec![attr_int("axis", 1)]);
    let position = b.weight("vision_model.embeddings.position_embedding.weight")?;
    let x = b.op("Add", &[&x, &position], vec![]);
    let mut x = b.layer_norm(&x, "vision_model.pre_layrnorm", c.layer_norm_eps)?;
    for i in 0..c.num_hidden_layers {
        x = b.block(&x, &format!("vision_model.encoder.layers.{i}"), c, None)?;
    }
    let zero = b.constant_i64("class_index", &[], &[0]);
    let pooled = b.op("Gather", &[&x, &zero], vec![attr_int("axis", 1)]);
    let pooled = b.layer_norm(&pooled, "vision_model.post_layernorm", c.layer_norm_eps)?;
    let embeds = b.linear(&pooled, "visual_projection", false)?;
    b.nodes.push(NodeProto {
        op_type: "Identity".into(),
        name: "image_embeds".into(),
        input: vec![embeds],
        output: vec!["image_embeds".into()],
        ..Default::default()
    });
    let size = c.image_size as i64;
    Ok(b.finish(
        "vision_model",
        vec![value_info(
            "pixel_values",
            DataType::Float,
            &[Err("batch_size"), Ok(3), Ok(size), Ok(size)],
        )],
        vec![value_info(
            "image_embeds",
            DataType::Float,
            &[Err("batch_size"), Ok(config.projection_dim as i64)],
        )],
    ))
}

/// CLIPTextModelWithProjection: `input_ids` → `text_embeds`, pooled where [`TextPooling`]
/// says for this config.
pub fn text_graph(
    config: &HfClipConfig,
    weights: &HashMap<String, Tensor>,
) -> Result<ModelProto, TuneError> {
    let c = &config.text_config;
    let mut b = Builder::new(weights);
    let d = c.hidden_size as i64;
    let tokens = b.weight("text_model.embeddings.token_embedding.weight")?;
    let x = b.op("Gather", &[&tokens, "input_ids"], vec![attr_int("axis", 0)]);
    // Positions 0..S and the causal mask, both cut from their full-length constants.
    let seq = b.op(
        "Shape",
        &["input_ids"],
        vec![attr_int("start", 1), attr_int("end", 2)],
    );
    let zero1 = b.constant_i64("zero", &[1], &[0]);
    let position = b.weight("text_model.embeddings.position_embedding.weight")?;
    let position = b.op("Slice", &[&position, &zero1, &seq, &zero1], vec![]);
    let x = b.op("Add", &[&x, &position], vec![]);
    let n = c.max_position_embeddings;
    let mask: Vec<f32> = (0..n * n)
        .map(|i| if i % n > i / n { f32::MIN } else { 0.0 })
        .collect();
    let mask = b.constant_f32("causal_mask", &[n as i64, n as i64], &mask);
    let seq2 = b.op("Concat", &[&seq, &seq], vec![attr_int("axis", 0)]);
    let zero2 = b.constant_i64("zeros", &[2], &[0, 0]);
    let axes = b.constant_i64("axes", &[2], &[0, 1]);
    let mask = b.op("Slice", &[&mask, &zero2, &seq2, &axes], vec![]);
    let mut x = x;
    for i in 0..c.num_hidden_layers {
        x = b.block(
            &x,
            &format!("text_model.encoder.layers.{i}"),
            c,
            Some(&mask),
        )?;
    }
    let x = b.layer_norm(&x, "text_model.final_layer_norm", c.layer_norm_eps)?;
    // Row b's pooled position e_b (the rule of `TextPooling`, as torch's exporter writes it:
    // ArgMax over int32): flatten to [B·S, D] and gather b·S + e_b.
    let scored = match TextPooling::of(c) {
        TextPooling::LargestId => "input_ids".to_string(),
        TextPooling::FirstOf(id) => {
            let eos = b.constant_i64("eos", &[], &[id as i64]);
            b.op("Equal", &["input_ids", &eos], vec![])
        }
    };
    let scored = b.op(
        "Cast",
        &[&scored],
        vec![attr_int("to", DataType::Int32 as i64)],
    );
    let at = b.op(
        "ArgMax",
        &[&scored],
        vec![attr_int("axis", 1), attr_int("keepdims", 0)],
    );
    let batch = b.op(
        "Shape",
        &["input_ids"],
        vec![attr_int("start", 0), attr_int("end", 1)],
    );
    let zero = b.constant_i64("range_start", &[], &[0]);
    let one = b.constant_i64("range_step", &[], &[1]);
    let batch_scalar = b.op("Squeeze", &[&batch, &zero1], vec![]);
    let rows = b.op("Range", &[&zero, &batch_scalar, &one], vec![]);
    let seq_scalar = b.op("Squeeze", &[&seq, &zero1], vec![]);
    let offsets = b.op("Mul", &[&rows, &seq_scalar], vec![]);
    let index = b.op("Add", &[&offsets, &at], vec![]);
    let flat_shape = b.constant_i64("flat_shape", &[2], &[-1, d]);
    let flat = b.op("Reshape", &[&x, &flat_shape], vec![]);
    let pooled = b.op("Gather", &[&flat, &index], vec![attr_int("axis", 0)]);
    let embeds = b.linear(&pooled, "text_projection", false)?;
    b.nodes.push(NodeProto {
        op_type: "Identity".into(),
        name: "text_embeds".into(),
        input: vec![embeds],
        output: vec!["text_embeds".into()],
        ..Default::default()
    });
    Ok(b.finish(
        "text_model",
        vec![value_info(
            "input_ids",
            DataType::Int64,
            &[Err("batch_size"), Err("sequence_length")],
        )],
        vec![value_info(
            "text_embeds",
            DataType::Float,
            &[Err("batch_size"), Ok(config.projection_dim as i64)],
        )],
    ))
}

/// What `export_model_dir` wrote: (file, bytes).
pub type ExportReport = Vec<(std::path::PathBuf, u64)>;

/// Which encoder files `export_model_dir` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precisions {
    /// fp32 and int8: `variant = "auto"` runs int8, `"fp32"` stays possible.
    Both,
    /// int8 only, for boxes short of disk (and the README demo, which must stay small).
    Int8Only,
}

/// Export a Hugging Face CLIP directory to a Xenova-layout model directory.
pub fn export_model_dir(
    hf_dir: &Path,
    out: &Path,
    precisions: Precisions,
) -> Result<ExportReport, TuneError> {
    let err = |path: &Path, reason: String| TuneError::Model {
        path: path.display().to_string(),
        reason,
    };
    let config = HfClipConfig::load(hf_dir)?;
    // Checked before any writing: the daemon cannot load a directory without them.
    for needed in ["tokenizer.json", "preprocessor_config.json"] {
        let path = hf_dir.join(needed);
        if !path.is_file() {
            return Err(err(
                &path,
                "missing; the daemon needs it beside the ONNX files".into(),
            ));
        }
    }
    let weights_path = hf_dir.join("model.safetensors");
    let weights = candle_core::safetensors::load(&weights_path, &Device::Cpu)
        .map_err(|e| err(&weights_path, e.to_string()))?;
    let onnx_dir = out.join("onnx");
    std::fs::create_dir_all(&onnx_dir).map_err(|e| err(&onnx_dir, e.to_string()))?;
    let mut report = Vec::new();
    for (name, mut graph) in [
        ("vision_model", vision_graph(&config, &weights)?),
        ("text_model", text_graph(&config, &weights)?),
    ] {
        let mut written = vec![];
        let fp32 = onnx_dir.join(format!("{name}.onnx"));
        if precisions == Precisions::Both {
            std::fs::write(&fp32, graph.encode_to_vec()).map_err(|e| err(&fp32, e.to_string()))?;
            written.push(fp32.clone());
        }
        cliptag_tract::int8_export::quantize_graph(&mut graph)
            .map_err(|e| err(&fp32, e.to_string()))?;
        let int8 = onnx_dir.join(format!("{name}_quantized.onnx"));
        std::fs::write(&int8, graph.encode_to_vec()).map_err(|e| err(&int8, e.to_string()))?;
        written.push(int8);
        for path in written {
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            report.push((path, bytes));
        }
    }
    report.extend(super::model::copy_side_files(hf_dir, out)?);
    Ok(report)
}
