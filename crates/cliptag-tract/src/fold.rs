//! A graph pass: fold constant chains whose *intermediate* values are large but whose
//! result is small.
//!
//! Rules, and why:
//! - tract's own constant propagation (`PropConst`) refuses any step whose output exceeds
//!   4 MiB (`CONST_FOLD_MEM_BUDGET`), so a chain like `Const(int8 768×3072) → Cast(i32) →
//!   ReduceSum` (the weight column sums that integer matmuls need for zero-point
//!   correction) stays in the graph and runs on every inference, although its result is a
//!   few kilobytes. This pass evaluates such a chain once, at load, and keeps only the
//!   result. It stands for an upstream change: let `PropConst` weigh the end of a
//!   single-successor walk rather than each step.
//! - Only a chain that *ends* no larger than tract's own allowance (or than the constant
//!   it starts from) is folded, so memory never grows: the big intermediates are dropped.
//! - Only ops that evaluate without a plan (`eval_out_of_plan`) and chains of single-input,
//!   single-successor nodes are walked, exactly as `PropConst` does.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::source::TypedSource;
use tract_onnx::tract_core::optim::CONST_FOLD_MEM_BUDGET;

/// What the pass did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FoldReport {
    pub chains: usize,
    /// Nodes taken out of every run.
    pub nodes: usize,
}

fn bytes(values: &[TValue]) -> u64 {
    values
        .iter()
        .map(|t| (t.datum_type().size_of() * t.volume()) as u64)
        .sum()
}

/// Fold every constant chain tract left because of its size; returns what was folded.
pub fn fold_large_constant_chains(model: &mut TypedModel) -> TractResult<FoldReport> {
    let mut report = FoldReport::default();
    // Chains are disjoint (a single-input node has one producer), and applying a patch
    // only appends nodes, so all chains are found in one scan and node ids stay valid
    // until the final compaction.
    let mut folds: Vec<(usize, TVec<TValue>)> = Vec::new();
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.op_is::<Const>() || node.op_is::<TypedSource>() || node.inputs.is_empty() {
            continue;
        }
        let facts = model.node_input_facts(id)?;
        let Some(inputs) = facts
            .iter()
            .map(|f| f.konst.clone().map(|k| k.into_tvalue()))
            .collect::<Option<TVec<TValue>>>()
        else {
            continue;
        };
        let allowance = bytes(&inputs).max(CONST_FOLD_MEM_BUDGET);
        let Ok(Some(mut values)) = node.op.eval_out_of_plan(inputs) else {
            continue;
        };
        // tract folds a chain whose every step fits on its own; only a chain whose first
        // step is over the allowance is ours, and then only up to a step that fits again.
        if bytes(&values) <= allowance {
            continue;
        }
        let mut end = node;
        let mut steps = 1;
        let mut fold: Option<(usize, TVec<TValue>, usize)> = None;
        while let Some(succ) = model.single_succ(end.id)? {
            if succ.inputs.len() != 1 {
                break;
            }
            let Ok(Some(next)) = succ.op.eval_out_of_plan(values) else {
                break;
            };
            values = next;
            end = succ;
            steps += 1;
            if bytes(&values) <= allowance {
                fold = Some((end.id, values.clone(), steps));
            }
        }
        if let Some((end_id, values, steps)) = fold {
            report.chains += 1;
            report.nodes += steps;
            folds.push((end_id, values));
        }
    }
    for (end_id, values) in folds {
        let name = model.node(end_id).name.clone();
        let mut patch = TypedModelPatch::default();
        for (ix, value) in values.into_iter().enumerate() {
            let wire = patch.add_const(format!("{name}.folded.{ix}"), value.into_arc_tensor())?;
            patch.shunt_outside(model, OutletId::new(end_id, ix), wire)?;
        }
        patch.apply(model)?;
    }
    if report.chains > 0 {
        model.compact()?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cast::cast;
    use tract_onnx::tract_core::ops::math::add;
    use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

    /// `x + sum_rows(cast_i32(W))` with an int8 W whose i32 form is over tract's budget.
    fn column_sum_graph(rows: usize, cols: usize) -> TractResult<(TypedModel, Tensor)> {
        let weights: Vec<i8> = (0..rows * cols).map(|i| (i % 251) as i8).collect();
        let w = Tensor::from_shape(&[rows, cols], &weights)?;
        let mut model = TypedModel::default();
        let x = model.add_source("x", i32::fact([1, cols]))?;
        let w = model.add_const("w", w)?;
        let wide = model.wire_node("wide", cast(i32::datum_type()), &[w])?[0];
        let sums = model.wire_node("sums", Reduce::new(tvec!(0), Reducer::Sum), &[wide])?[0];
        let out = model.wire_node("out", add(), &[x, sums])?[0];
        model.select_output_outlets(&[out])?;
        let x = Tensor::from_shape(&[1, cols], &vec![1i32; cols])?;
        Ok((model, x))
    }

    #[test]
    fn folds_a_chain_tract_refuses_and_keeps_the_result() -> TractResult<()> {
        // 1024 x 2048 int8 = 2 MiB; as i32, 8 MiB: over the 4 MiB allowance.
        let (model, x) = column_sum_graph(1024, 2048)?;
        let reference = model
            .clone()
            .into_runnable()?
            .run(tvec!(x.clone().into()))?
            .remove(0);
        let mut optimized = model.into_optimized()?;
        let before = optimized.nodes().len();
        let report = fold_large_constant_chains(&mut optimized)?;
        assert_eq!(report.chains, 1);
        assert!(optimized.nodes().len() < before);
        assert!(!optimized.nodes().iter().any(|n| n.name == "wide"));
        let folded = optimized.into_runnable()?.run(tvec!(x.into()))?.remove(0);
        assert_eq!(folded, reference);
        Ok(())
    }

    #[test]
    fn leaves_small_chains_to_tract() -> TractResult<()> {
        let (model, _) = column_sum_graph(16, 16)?;
        let mut optimized = model.into_optimized()?;
        assert_eq!(
            fold_large_constant_chains(&mut optimized)?,
            FoldReport::default()
        );
        Ok(())
    }
}
