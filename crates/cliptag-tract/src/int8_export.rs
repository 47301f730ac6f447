//! The int8 ONNX writer: rewrites an fp32 CLIP graph (a decoded `ModelProto`) into one whose
//! linear layers run on the fused int8 path ([`crate::qlinear`]) and that onnxruntime loads
//! as well. `cliptag model quantize` and the tuner's export write their files with it.
//!
//! Rules, and why:
//! - Graph in, graph out: reading, writing and copying model directories is the caller's,
//!   so this holds only what the ONNX format and our int8 op agree on.
//! - Only `MatMul` nodes whose second input is a rank-2 fp32 initializer change: they hold
//!   nearly all of a ViT's weights and time. Attention's activation × activation products,
//!   convolutions, norms and the small embeddings stay fp32.
//! - A vocabulary table (a `Gather` from a rank-2 fp32 initializer of at least
//!   `VOCABULARY_ROWS` rows) becomes int8 with one symmetric scale per row, read back as
//!   `Gather(int8) → Cast → Mul(Gather(scales))`: it is most of a text tower's bytes (101 of
//!   254 MB in ViT-B/32's) and only a few rows are read per prompt, so it costs no time.
//! - Weights are int8, symmetric, one scale per output column (`s = max|w| / 127`): per-column
//!   scales keep the error of wide-ranged columns away from the others. They are stored as
//!   uint8 with zero point 128 (the same values shifted), not int8 with zero point 0:
//!   onnxruntime's uint8 × int8 kernel on x86 CPUs without VNNI adds byte products in
//!   saturating 16-bit pairs, which wrecked the int8 × int8 form there (text cosine 0.877 to
//!   fp32 on an AVX2-only CPU, 0.9988 as uint8). tract's fused layer takes either form.
//! - Activations are quantized at run time by ONNX's own `DynamicQuantizeLinear` (uint8 with a
//!   zero point), once per tensor however many layers read it. The layer is
//!   `DynamicQuantizeLinear → MatMulInteger → Cast → Mul(a_scale · w_scale)`, the same shape
//!   onnxruntime's `quantize_dynamic` writes, so one fused pass serves both; only standard
//!   ai.onnx operators (opset ≥ 10) are used.
//! - The fp32 initializers no longer read are dropped, so the file shrinks about 4×.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, ModelProto, NodeProto,
    TensorProto,
};

/// Why a graph could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the file holds no graph")]
    NoGraph,
    #[error("initializer {name:?}: {values} values for dims {dims:?}")]
    InitializerSize {
        name: String,
        values: usize,
        dims: Vec<i64>,
    },
}

/// The fp32 values of an initializer, whichever field holds them.
fn floats(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != DataType::Float as i32 || t.data_location == Some(1) {
        return None;
    }
    if !t.raw_data.is_empty() {
        return Some(
            t.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
    }
    Some(t.float_data.clone())
}

fn tensor(name: String, dims: &[i64], data_type: DataType, raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        name,
        dims: dims.to_vec(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

fn node(op: &str, name: String, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name,
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Per-column symmetric int8 of a row-major `[k, n]` matrix: (values, scales).
pub fn quantize_columns(w: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let mut scales = vec![0f32; n];
    for row in w.chunks_exact(n) {
        for (s, v) in scales.iter_mut().zip(row) {
            *s = s.max(v.abs());
        }
    }
    for s in &mut scales {
        // An all-zero column keeps scale 1 so dequantizing never divides by zero.
        *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
    }
    let mut q = vec![0i8; k * n];
    for (qrow, row) in q.chunks_exact_mut(n).zip(w.chunks_exact(n)) {
        for ((q, v), s) in qrow.iter_mut().zip(row).zip(&scales) {
            *q = (v / s).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
    }
    (q, scales)
}

/// Tables with at least this many rows are vocabularies (CLIP's has 49408); position
/// embeddings (77 or 50 rows) are small and stay fp32.
pub const VOCABULARY_ROWS: usize = 4096;

/// Per-row symmetric int8 of a row-major `[rows, width]` table: (values, scales).
pub fn quantize_rows(t: &[f32], rows: usize, width: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; rows * width];
    let mut scales = Vec::with_capacity(rows);
    for (qrow, row) in q.chunks_exact_mut(width).zip(t.chunks_exact(width)) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if max > 0.0 { max / 127.0 } else { 1.0 };
        for (q, v) in qrow.iter_mut().zip(row) {
            *q = (v / s).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        scales.push(s);
    }
    (q, scales)
}

/// A `Gather` on axis 0 of a vocabulary-sized fp32 initializer: (name, rows, width, values).
fn vocabulary_table(
    n: &NodeProto,
    graph: &tract_onnx::pb::GraphProto,
    initializers: &HashMap<String, usize>,
) -> Option<(String, usize, usize, Vec<f32>)> {
    if n.op_type != "Gather" || !n.domain.is_empty() || n.input.len() != 2 {
        return None;
    }
    if n.attribute.iter().any(|a| a.name == "axis" && a.i != 0) {
        return None;
    }
    let t = &graph.initializer[*initializers.get(&n.input[0])?];
    if t.dims.len() != 2 || t.dims[0] < VOCABULARY_ROWS as i64 {
        return None;
    }
    let (rows, width) = (t.dims[0] as usize, t.dims[1] as usize);
    let values = floats(t).filter(|v| v.len() == rows * width)?;
    Some((t.name.clone(), rows, width, values))
}

/// The prefix of the names of the nodes that replace `n`: its name, else its output's.
fn name_base(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.output[0].clone()
    } else {
        n.name.clone()
    }
}

fn cast_to_float(name: String, input: &str, output: &str) -> NodeProto {
    let mut cast = node("Cast", name, &[input], &[output]);
    cast.attribute.push(AttributeProto {
        name: "to".into(),
        r#type: AttributeType::Int as i32,
        i: DataType::Float as i64,
        ..Default::default()
    });
    cast
}

/// Rewrites the graph's weight matmuls and vocabulary tables in place; returns how many
/// matmuls.
pub fn quantize_graph(model: &mut ModelProto) -> Result<usize, ExportError> {
    let graph = model.graph.as_mut().ok_or(ExportError::NoGraph)?;
    let initializers: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    let mut new_initializers: Vec<TensorProto> = vec![];
    let mut quantized_weights: HashMap<String, (String, String, String)> = HashMap::new();
    let mut quantized_activations: HashMap<String, (String, String, String)> = HashMap::new();
    let mut nodes: Vec<NodeProto> = Vec::with_capacity(graph.node.len());
    let mut layers = 0;
    let mut tables: HashMap<String, (String, String)> = HashMap::new();
    for n in std::mem::take(&mut graph.node) {
        if let Some((table, rows, width, values)) = vocabulary_table(&n, graph, &initializers) {
            let (tq, ts) = tables
                .entry(table.clone())
                .or_insert_with(|| {
                    let (q, scales) = quantize_rows(&values, rows, width);
                    let names = (format!("{table}_quantized"), format!("{table}_scale"));
                    new_initializers.push(tensor(
                        names.0.clone(),
                        &[rows as i64, width as i64],
                        DataType::Int8,
                        q.iter().map(|v| *v as u8).collect(),
                    ));
                    new_initializers.push(tensor(
                        names.1.clone(),
                        &[rows as i64, 1],
                        DataType::Float,
                        scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
                    ));
                    names
                })
                .clone();
            let (ids, out, base) = (n.input[1].clone(), n.output[0].clone(), name_base(&n));
            let (rows_q, rows_f, row_scales) = (
                format!("{out}_int8"),
                format!("{out}_int8_float"),
                format!("{out}_row_scales"),
            );
            let mut gather = node("Gather", format!("{base}_quant"), &[&tq, &ids], &[&rows_q]);
            gather.attribute = n.attribute.clone();
            nodes.push(gather);
            let mut gather_scales = node(
                "Gather",
                format!("{base}_scales"),
                &[&ts, &ids],
                &[&row_scales],
            );
            gather_scales.attribute = n.attribute.clone();
            nodes.push(gather_scales);
            nodes.push(cast_to_float(format!("{base}_cast"), &rows_q, &rows_f));
            nodes.push(node(
                "Mul",
                format!("{base}_scales_mul"),
                &[&rows_f, &row_scales],
                &[&out],
            ));
            continue;
        }
        let weight = (n.op_type == "MatMul" && n.domain.is_empty() && n.input.len() == 2)
            .then(|| {
                initializers
                    .get(&n.input[1])
                    .map(|&i| &graph.initializer[i])
            })
            .flatten()
            .filter(|t| t.dims.len() == 2 && t.data_type == DataType::Float as i32);
        let Some(weight) = weight else {
            nodes.push(n);
            continue;
        };
        let Some(values) = floats(weight) else {
            nodes.push(n);
            continue;
        };
        let (k, cols) = (weight.dims[0] as usize, weight.dims[1] as usize);
        if values.len() != k * cols {
            return Err(ExportError::InitializerSize {
                name: weight.name.clone(),
                values: values.len(),
                dims: weight.dims.clone(),
            });
        }
        let w_name = weight.name.clone();
        let (wq, ws, wz) = quantized_weights
            .entry(w_name.clone())
            .or_insert_with(|| {
                let (q, scales) = quantize_columns(&values, k, cols);
                let names = (
                    format!("{w_name}_quantized"),
                    format!("{w_name}_scale"),
                    format!("{w_name}_zero_point"),
                );
                new_initializers.push(tensor(
                    names.0.clone(),
                    &weight.dims,
                    DataType::Uint8,
                    q.iter().map(|v| (*v as i16 + 128) as u8).collect(),
                ));
                new_initializers.push(tensor(
                    names.1.clone(),
                    &[cols as i64],
                    DataType::Float,
                    scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
                ));
                new_initializers.push(tensor(
                    names.2.clone(),
                    &[cols as i64],
                    DataType::Uint8,
                    vec![128; cols],
                ));
                names
            })
            .clone();
        let a = n.input[0].clone();
        let (aq, a_scale, a_zero) = match quantized_activations.get(&a) {
            Some(names) => names.clone(),
            None => {
                let names = (
                    format!("{a}_quantized"),
                    format!("{a}_scale"),
                    format!("{a}_zero_point"),
                );
                nodes.push(node(
                    "DynamicQuantizeLinear",
                    format!("{a}_QuantizeLinear"),
                    &[&a],
                    &[&names.0, &names.1, &names.2],
                ));
                quantized_activations.insert(a.clone(), names.clone());
                names
            }
        };
        let (out, base) = (n.output[0].clone(), name_base(&n));
        let (int_out, float_out, scale) = (
            format!("{out}_int32"),
            format!("{out}_int32_float"),
            format!("{base}_scales"),
        );
        nodes.push(node(
            "MatMulInteger",
            format!("{base}_quant"),
            &[&aq, &wq, &a_zero, &wz],
            &[&int_out],
        ));
        nodes.push(cast_to_float(format!("{base}_cast"), &int_out, &float_out));
        nodes.push(node(
            "Mul",
            format!("{base}_scales_mul"),
            &[&a_scale, &ws],
            &[&scale],
        ));
        nodes.push(node(
            "Mul",
            format!("{base}_output_scale_mul"),
            &[&float_out, &scale],
            &[&out],
        ));
        layers += 1;
    }
    graph.node = nodes;
    // Drop the fp32 weights nothing reads any more.
    let read: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let unread: HashSet<String> = quantized_weights
        .keys()
        .chain(tables.keys())
        .filter(|name| !read.contains(name.as_str()))
        .cloned()
        .collect();
    graph.initializer.retain(|t| !unread.contains(&t.name));
    graph.input.retain(|i| !unread.contains(&i.name));
    graph.initializer.extend(new_initializers);
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_symmetric_and_round_trip_within_half_a_step() {
        let (k, n) = (5, 3);
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1 * (1 + i % n) as f32)
            .collect();
        let (q, scales) = quantize_columns(&w, k, n);
        for (i, (q, w)) in q.iter().zip(&w).enumerate() {
            let s = scales[i % n];
            assert!((*q as f32 * s - w).abs() <= s / 2.0 + 1e-7);
            assert!(*q >= -127);
        }
        // Each column's largest magnitude maps to ±127.
        for c in 0..n {
            assert!((0..k).any(|r| q[r * n + c].abs() == 127));
        }
    }

    #[test]
    fn rows_are_symmetric_and_round_trip_within_half_a_step() {
        let (rows, width) = (4, 6);
        let t: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 29 % 13) as f32 - 6.0) * 0.01 * (1 + i / width) as f32)
            .collect();
        let (q, scales) = quantize_rows(&t, rows, width);
        for (i, (q, v)) in q.iter().zip(&t).enumerate() {
            let s = scales[i / width];
            assert!((*q as f32 * s - v).abs() <= s / 2.0 + 1e-7);
        }
        for r in 0..rows {
            assert!(q[r * width..(r + 1) * width].iter().any(|v| v.abs() == 127));
        }
    }
}
