"""Graph rewrites that make the exported graph fast without changing its numbers."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def gemm_for_transposed_weights(model: onnx.ModelProto) -> int:
    """Replace `MatMul(x, Transpose(W))` on an initializer W by `Gemm(x, W, transB=1)`.

    Deduplicating the tied unembedding leaves lm_head reading `Transpose(wte)`, which ONNX Runtime
    does not fold: it transposed the whole [vocab, d_model] matrix at every generation step (about
    80% of a distilgpt2 step). Gemm takes W as stored. Returns how many MatMuls were rewritten.
    """
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    transposed = {n.output[0]: n for n in g.node
                  if n.op_type == "Transpose" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    rewritten, nodes = 0, []
    for n in g.node:
        if n.op_type == "MatMul" and n.input[1] in transposed:
            w = transposed[n.input[1]].input[0]
            d_in = inits[w].dims[1]
            x, y, p = n.input[0], n.output[0], f"lens_gemm_{rewritten}"
            g.initializer.extend([numpy_helper.from_array(np.array([-1, d_in], np.int64), f"{p}/flat"),
                                  numpy_helper.from_array(np.array([-1], np.int64), f"{p}/minus_one"),
                                  numpy_helper.from_array(np.array([0], np.int64), f"{p}/zero")])
            nodes += [
                helper.make_node("Shape", [x], [f"{p}/shape"], name=f"{p}/Shape"),
                helper.make_node("Slice", [f"{p}/shape", f"{p}/zero", f"{p}/minus_one"], [f"{p}/lead"],
                                 name=f"{p}/Slice"),
                helper.make_node("Concat", [f"{p}/lead", f"{p}/minus_one"], [f"{p}/out_shape"], axis=0,
                                 name=f"{p}/Concat"),
                helper.make_node("Reshape", [x, f"{p}/flat"], [f"{p}/x2d"], name=f"{p}/Reshape_in"),
                helper.make_node("Gemm", [f"{p}/x2d", w], [f"{p}/y2d"], transB=1, name=f"{p}/Gemm"),
                helper.make_node("Reshape", [f"{p}/y2d", f"{p}/out_shape"], [y], name=f"{p}/Reshape_out"),
            ]
            rewritten += 1
        else:
            nodes.append(n)
    if rewritten:
        used = {i for n in nodes for i in n.input}
        nodes = [n for n in nodes if not (n.op_type == "Transpose" and n.output[0] in transposed
                                          and n.output[0] not in used)]
        del g.node[:]
        g.node.extend(nodes)
    return rewritten
