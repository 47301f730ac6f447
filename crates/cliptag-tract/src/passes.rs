//! Which of our graph passes run, and on which graph: the list is data, as tract keeps its
//! own declutter and codegen passes, so the edge crate asks for a stage's passes instead of
//! calling each one.
//!
//! Rules, and why:
//! - Two stages. The linear and attention fusions ([`DECLUTTERED`]) run on the decluttered
//!   graph, while it still reads as the exporter wrote it: tract's codegen rewrites the
//!   matmuls they look for. Constant folding and the quantizer swap ([`OPTIMIZED`]) run on
//!   the optimised graph: integer matmuls left to tract (the patch embedding's convolution)
//!   get their weight column sums during codegen, and those are the chains to fold.
//! - Within a stage, passes run in list order.
//! - `CLIPTAG_GRAPH_PASSES` is a measurement switch, not configuration: a comma list of pass
//!   names (all of them when unset, `qlinear,flinear,attention,fold,quantize`; `none` turns
//!   every pass off) that only removes passes from a stage's list, never adds or reorders
//!   one, so tract can be timed with and without each.
//! - Each pass run logs one debug line saying what it did.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::ensure;

use crate::{attention, flinear, fold, qlinear, quantize};

/// One of our graph passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    /// Fuse each dynamically quantized linear layer ([`qlinear`]).
    QLinear,
    /// Fuse each fp32 linear layer ([`flinear`]).
    FLinear,
    /// Fuse each attention core ([`attention`]).
    Attention,
    /// Fold constant chains tract leaves for their size ([`fold`]).
    Fold,
    /// Swap tract's DynamicQuantizeLinear for a vectorised one ([`quantize`]).
    Quantize,
}

/// The graph a pass runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Typed and decluttered, before tract's codegen.
    Decluttered,
    /// After `into_optimized`, before the plan is made runnable.
    Optimized,
}

/// The passes for the decluttered graph, in the order they run.
pub const DECLUTTERED: &[Pass] = &[Pass::QLinear, Pass::FLinear, Pass::Attention];

/// The passes for the optimised graph, in the order they run.
pub const OPTIMIZED: &[Pass] = &[Pass::Fold, Pass::Quantize];

/// The environment variable that turns passes off, to measure them.
pub const PASSES_ENV: &str = "CLIPTAG_GRAPH_PASSES";

impl Pass {
    /// The pass's name in `CLIPTAG_GRAPH_PASSES`.
    pub fn name(self) -> &'static str {
        match self {
            Pass::QLinear => "qlinear",
            Pass::FLinear => "flinear",
            Pass::Attention => "attention",
            Pass::Fold => "fold",
            Pass::Quantize => "quantize",
        }
    }

    /// The graph the pass runs on.
    pub fn stage(self) -> Stage {
        match self {
            Pass::QLinear | Pass::FLinear | Pass::Attention => Stage::Decluttered,
            Pass::Fold | Pass::Quantize => Stage::Optimized,
        }
    }

    /// Runs the pass over `model` and logs what it did.
    fn run(self, model: &mut TypedModel) -> TractResult<()> {
        match self {
            Pass::QLinear => {
                let fused = qlinear::fuse_quantized_linear(model)?;
                tracing::debug!(fused, "fused int8 linear layers");
            }
            Pass::FLinear => {
                let fused = flinear::fuse_float_linear(model)?;
                tracing::debug!(fused, "fused fp32 linear layers");
            }
            Pass::Attention => {
                let fused = attention::fuse_attention(model)?;
                tracing::debug!(fused, "fused attention cores");
            }
            Pass::Fold => {
                let report = fold::fold_large_constant_chains(model)?;
                tracing::debug!(
                    chains = report.chains,
                    nodes = report.nodes,
                    "folded constant chains"
                );
            }
            Pass::Quantize => {
                let swapped = quantize::vectorise_dynamic_quantize(model)?;
                tracing::debug!(swapped, "vectorised DynamicQuantizeLinear");
            }
        }
        Ok(())
    }
}

/// The passes of `list` that `CLIPTAG_GRAPH_PASSES` leaves on, in `list`'s order: all of
/// them when it is unset.
pub fn enabled(list: &[Pass]) -> Vec<Pass> {
    match std::env::var(PASSES_ENV) {
        Ok(chosen) => select(list, &chosen),
        Err(_) => list.to_vec(),
    }
}

/// The passes of `list` named in the comma list `chosen`.
fn select(list: &[Pass], chosen: &str) -> Vec<Pass> {
    list.iter()
        .copied()
        .filter(|pass| chosen.split(',').any(|c| c.trim() == pass.name()))
        .collect()
}

/// Runs `passes`, in order, over a typed and decluttered model.
pub fn apply_decluttered(model: &mut TypedModel, passes: &[Pass]) -> TractResult<()> {
    apply(model, Stage::Decluttered, passes)
}

/// Runs `passes`, in order, over an optimised model.
pub fn apply_optimized(model: &mut TypedModel, passes: &[Pass]) -> TractResult<()> {
    apply(model, Stage::Optimized, passes)
}

fn apply(model: &mut TypedModel, stage: Stage, passes: &[Pass]) -> TractResult<()> {
    for pass in passes {
        ensure!(
            pass.stage() == stage,
            "graph pass {} runs on the {:?} graph, not the {stage:?} one",
            pass.name(),
            pass.stage()
        );
        pass.run(model)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_list_runs_every_pass_in_order() {
        let all = "qlinear,flinear,attention,fold,quantize";
        assert_eq!(select(DECLUTTERED, all), DECLUTTERED);
        assert_eq!(select(OPTIMIZED, all), OPTIMIZED);
    }

    #[test]
    fn the_switch_only_removes_passes() {
        assert_eq!(select(DECLUTTERED, "none"), []);
        assert_eq!(select(OPTIMIZED, ""), []);
        // Order and spaces in the list do not matter; unknown names are ignored.
        assert_eq!(
            select(DECLUTTERED, " attention , qlinear,bogus"),
            [Pass::QLinear, Pass::Attention]
        );
        assert_eq!(select(OPTIMIZED, "quantize"), [Pass::Quantize]);
    }

    #[test]
    fn each_list_holds_its_own_stage() {
        assert!(DECLUTTERED.iter().all(|p| p.stage() == Stage::Decluttered));
        assert!(OPTIMIZED.iter().all(|p| p.stage() == Stage::Optimized));
        let mut model = TypedModel::default();
        assert!(apply_decluttered(&mut model, OPTIMIZED).is_err());
    }
}
