"""Find the residual stream, MLP activations and final norm in an exported decoder graph, and expose
them as extra graph outputs named with TransformerLens hook names (`lens.hooks`).

Found by structure, not by the exporter's scope names (those carry counters that differ between
graphs): normalisation nodes in topological order are [ln_1, ln_2] per block then ln_final; the
residual stream entering block l is ln_1's input; the MLP activation is the data input of the first
matmul after ln_2 whose weight reads d_mlp (not d_model) features, i.e. the down-projection.
"""
from __future__ import annotations

import onnx
from onnx import helper

from .. import hooks
from ..errors import LensError

NORM_OPS = ("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization")
SHAPE_ONLY = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast")


def find_taps(graph: onnx.GraphProto, n_layers: int, d_model: int) -> dict[str, str]:
    """{hook name: tensor name in `graph`} for every tap of `hooks.all_taps(n_layers)`."""
    norms = [n for n in graph.node if n.op_type in NORM_OPS]
    if len(norms) != 2 * n_layers + 1:
        raise LensError(f"exported graph has {len(norms)} normalisation nodes, expected "
                        f"{2 * n_layers + 1} for {n_layers} layers: unsupported model structure")
    producer = {o: n for n in graph.node for o in n.output}
    taps = {hooks.EMBED: norms[0].input[0], hooks.LN_FINAL: norms[-1].output[0]}
    for l in range(n_layers):
        nxt = norms[2 * l + 2]
        taps[hooks.resid_post(l)] = nxt.input[0]
        taps[hooks.mlp_post(l)] = _strip_shape_ops(_down_proj_input(graph, norms[2 * l + 1], d_model), producer)
    return {name: taps[name] for name in hooks.all_taps(n_layers)}


def _weight_in_features(node: onnx.NodeProto, inits: dict) -> int | None:
    w = inits.get(node.input[1]) if len(node.input) > 1 else None
    if w is None or len(w.dims) != 2:
        return None
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    return w.dims[1] if trans_b else w.dims[0]


def _down_proj_input(graph: onnx.GraphProto, ln2: onnx.NodeProto, d_model: int) -> str:
    inits = {i.name: i for i in graph.initializer}
    reached = set(ln2.output)
    started = False
    for node in graph.node:  # graph.node is topologically sorted
        if node is ln2:
            started = True
            continue
        if not started or not reached.intersection(node.input):
            continue
        reached.update(node.output)
        if node.op_type in ("MatMul", "Gemm"):
            fin = _weight_in_features(node, inits)
            if fin is not None and fin != d_model:
                return node.input[0]
    raise LensError(f"no MLP down-projection found after {ln2.name}: unsupported model structure")


def _strip_shape_ops(name: str, producer: dict) -> str:
    """Walk back through reshapes that only flatten [batch, seq, d] to [batch*seq, d]."""
    while name in producer and producer[name].op_type in SHAPE_ONLY[:2]:
        name = producer[name].input[0]
    return name


def add_tap_outputs(model: onnx.ModelProto, taps: dict[str, str]) -> None:
    """Expose each tapped tensor as a graph output named by its hook (through an Identity node)."""
    g = model.graph
    for hook, tensor in taps.items():
        g.node.append(helper.make_node("Identity", [tensor], [hook], name=f"lens_tap/{hook}"))
        dims = ["batch_size", "sequence_length", "d_mlp" if ".mlp." in hook else "d_model"]
        g.output.append(helper.make_tensor_value_info(hook, onnx.TensorProto.FLOAT, dims))
