//! Graph matching helpers the passes share: reading constants, walking to a node's single
//! consumer, recognising binary ops by name, and CLIP's QuickGELU.
//!
//! Rules, and why:
//! - Every helper answers `None` (or `false`) for anything that is not exactly the shape it
//!   looks for, so a pass built from them leaves an unexpected graph to tract instead of
//!   rewriting it wrongly.
//! - Only helpers two or more passes use live here; a helper one pass needs stays in that
//!   pass's file, and no pass imports from another.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;

/// The value of `outlet` when tract knows it at load (a constant, or folded into one).
pub(crate) fn konst(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    model.outlet_fact(outlet).ok()?.konst.clone()
}

/// The one input that reads `node`'s one output, when exactly one does.
pub(crate) fn single_successor_inlet(model: &TypedModel, node: usize) -> Option<InletId> {
    match model.node(node).outputs.as_slice() {
        [o] if o.successors.len() == 1 => Some(o.successors[0]),
        _ => None,
    }
}

/// The node that reads `node`'s one output, when exactly one does.
pub(crate) fn single_successor(model: &TypedModel, node: usize) -> Option<usize> {
    single_successor_inlet(model, node).map(|inlet| inlet.node)
}

/// `node` when it is a two-input binary op called `name` ("Add", "Mul", …).
pub(crate) fn binary_named<'m>(
    model: &'m TypedModel,
    node: usize,
    name: &str,
) -> Option<&'m TypedNode> {
    let n = model.node(node);
    let op = n.op_as::<TypedBinOp>()?;
    (op.0.name() == name && n.inputs.len() == 2).then_some(n)
}

/// The other input of a binary node.
pub(crate) fn other_input(node: &TypedNode, this: usize) -> Option<OutletId> {
    match node.inputs.as_slice() {
        [a, b] if a.node == this => Some(*b),
        [a, b] if b.node == this => Some(*a),
        _ => None,
    }
}

/// `α` and the final Mul of a QuickGELU (`Mul(y, α) → Sigmoid → Mul(y, ·)`) that takes
/// layer `id`'s output and nothing else does.
pub(crate) fn find_quick_gelu(model: &TypedModel, id: usize) -> Option<(f32, usize)> {
    let successors: Vec<usize> = match model.node(id).outputs.as_slice() {
        [o] if o.successors.len() == 2 => o.successors.iter().map(|s| s.node).collect(),
        _ => return None,
    };
    // Which successor scales by α (then feeds only a Sigmoid), which multiplies by the gate.
    for (scale, product) in [
        (successors[0], successors[1]),
        (successors[1], successors[0]),
    ] {
        let Some(scale_node) = binary_named(model, scale, "Mul") else {
            continue;
        };
        let Some(alpha) = other_input(scale_node, id)
            .and_then(|o| konst(model, o))
            .filter(|k| k.len() == 1 && k.datum_type() == DatumType::F32)
            .and_then(|k| k.cast_to_scalar::<f32>().ok())
        else {
            continue;
        };
        let Some(sigmoid) = single_successor(model, scale) else {
            continue;
        };
        let is_sigmoid = model
            .node(sigmoid)
            .op_as::<ElementWiseOp>()
            .is_some_and(|e| e.0.name() == "Sigmoid");
        let Some(product_node) = binary_named(model, product, "Mul") else {
            continue;
        };
        let gated = other_input(product_node, id).is_some_and(|o| o.node == sigmoid);
        if is_sigmoid && gated && single_successor(model, sigmoid) == Some(product) {
            return Some((alpha, product));
        }
    }
    None
}
