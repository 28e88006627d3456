"""Find the residual stream, MLP activations and final norm in an exported decoder graph, and expose
them as extra graph outputs named with TransformerLens hook names (`lens.hooks`).

Found by structure, not by the exporter's scope names (those carry counters that differ between
graphs, and Llama graphs have anonymous initializers): normalisations in topological order are
[attention norm, MLP norm] per block then the final norm; the residual stream entering block l is
its attention norm's input; the MLP activation is the data input of the first matmul after the MLP
norm whose weight reads d_mlp (not d_model) features, i.e. the down-projection.

A normalisation is a LayerNormalization node (GPT-2), or an RMSNorm that the exporter decomposed:
ReduceMean(Pow(x, 2)) with x the residual stream (through a Cast), ending in the first Mul by a
[d_model] weight (Llama).
"""
from __future__ import annotations

from typing import NamedTuple

import onnx
from onnx import helper, numpy_helper

from .. import hooks
from ..errors import LensError

SHAPE_ONLY = ("Reshape", "Flatten")


class Norm(NamedTuple):
    input: str     # the residual stream entering the norm
    output: str    # the normalised, scaled tensor
    last: int      # index in graph.node of the node producing `output`


def initializers(graph: onnx.GraphProto) -> dict:
    """{tensor name: initializer}, also for names an Identity chain gives to an initializer (the
    exporter deduplicates equal weights that way, e.g. all-ones norm weights of a random model)."""
    inits = {i.name: i for i in graph.initializer}
    for n in graph.node:  # topological order: a chain resolves front to back
        if n.op_type == "Identity" and n.input[0] in inits:
            inits[n.output[0]] = inits[n.input[0]]
    return inits


def find_norms(graph: onnx.GraphProto, d_model: int, inits: dict) -> list[Norm]:
    nodes = list(graph.node)
    producer = {o: n for n in nodes for o in n.output}
    consts = {n.output[0]: n for n in nodes if n.op_type == "Constant"}
    norms = []
    for i, n in enumerate(nodes):
        if n.op_type in ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"):
            norms.append(Norm(n.input[0], n.output[0], i))
        elif n.op_type == "ReduceMean" and n.input[0] in producer and producer[n.input[0]].op_type == "Pow" \
                and _scalar(producer[n.input[0]].input[1], inits, consts) == 2.0:
            x = producer[n.input[0]].input[0]
            residual = producer[x].input[0] if x in producer and producer[x].op_type == "Cast" else x
            norms.append(Norm(residual, *_scaled_output(nodes, i, d_model, inits)))
    return norms


def _scalar(name, inits, consts):
    if name in inits:
        arr = numpy_helper.to_array(inits[name])
    elif name in consts:
        arr = numpy_helper.to_array(consts[name].attribute[0].t)
    else:
        return None
    return float(arr) if arr.size == 1 else None


def _scaled_output(nodes, start: int, d_model: int, inits) -> tuple[str, int]:
    """The first Mul downstream of an RMSNorm's ReduceMean with a [d_model] initializer: x * weight."""
    reached = set(nodes[start].output)
    for j in range(start + 1, len(nodes)):
        n = nodes[j]
        if not reached.intersection(n.input):
            continue
        reached.update(n.output)
        if n.op_type == "Mul" and any(i in inits and list(inits[i].dims) == [d_model] for i in n.input):
            return n.output[0], j
    raise LensError("an RMSNorm without a weight: unsupported model structure")


def find_taps(graph: onnx.GraphProto, n_layers: int, d_model: int) -> dict[str, str]:
    """{hook name: tensor name in `graph`} for every tap of `hooks.all_taps(n_layers)`."""
    inits = initializers(graph)
    norms = find_norms(graph, d_model, inits)
    if len(norms) != 2 * n_layers + 1:
        raise LensError(f"exported graph has {len(norms)} normalisations, expected "
                        f"{2 * n_layers + 1} for {n_layers} layers: unsupported model structure")
    producer = {o: n for n in graph.node for o in n.output}
    taps = {hooks.EMBED: norms[0].input, hooks.LN_FINAL: norms[-1].output}
    for l in range(n_layers):
        taps[hooks.resid_post(l)] = norms[2 * l + 2].input
        down_input = _down_proj_input(graph, norms[2 * l + 1], d_model, inits)
        taps[hooks.mlp_post(l)] = _strip_shape_ops(down_input, producer)
    return {name: taps[name] for name in hooks.all_taps(n_layers)}


def _weight_in_features(node: onnx.NodeProto, inits: dict) -> int | None:
    w = inits.get(node.input[1]) if len(node.input) > 1 else None
    if w is None or len(w.dims) != 2:
        return None
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    return w.dims[1] if trans_b else w.dims[0]


def _down_proj_input(graph: onnx.GraphProto, norm: Norm, d_model: int, inits: dict) -> str:
    reached = {norm.output}
    for node in list(graph.node)[norm.last + 1:]:  # graph.node is topologically sorted
        if not reached.intersection(node.input):
            continue
        reached.update(node.output)
        if node.op_type in ("MatMul", "Gemm"):
            fin = _weight_in_features(node, inits)
            if fin is not None and fin != d_model:
                return node.input[0]
    raise LensError(f"no MLP down-projection found after {norm.output}: unsupported model structure")


def _strip_shape_ops(name: str, producer: dict) -> str:
    """Walk back through reshapes that only flatten [batch, seq, d] to [batch*seq, d]."""
    while name in producer and producer[name].op_type in SHAPE_ONLY:
        name = producer[name].input[0]
    return name


def add_tap_outputs(model: onnx.ModelProto, taps: dict[str, str]) -> None:
    """Expose each tapped tensor as a graph output named by its hook (through an Identity node)."""
    g = model.graph
    for hook, tensor in taps.items():
        g.node.append(helper.make_node("Identity", [tensor], [hook], name=f"lens_tap/{hook}"))
        dims = ["batch_size", "sequence_length", "d_mlp" if ".mlp." in hook else "d_model"]
        g.output.append(helper.make_tensor_value_info(hook, onnx.TensorProto.FLOAT, dims))
