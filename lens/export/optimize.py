"""Graph rewrites that make the exported graph fast without changing its numbers."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..hooks import LOGITS_FROM


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
    consumers: dict[str, list] = {}
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


def logits_from_input(model: onnx.ModelProto) -> int:
    """Let a caller skip the unembedding at the positions it does not read: lm_head's input
    ([batch, seq, d_model]) is sliced from position `logits_from` on, a graph input whose default (an
    initializer of the same name) is 0: every position, as before. Generation needs the last position
    only, and activation profiling none; the unembedding is ~21 % of SmolLM2's forward and its
    [batch, seq, d_vocab] output the largest tensor. Taps are untouched. Returns how many nodes
    now read the slice (0: no lm_head found)."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    constant = {i.name for i in g.initializer} | {n.output[0] for n in g.node if n.op_type == "Constant"}
    head = producer.get("logits")
    # back from the logits through reshapes and element-wise steps (a bias, Granite's scale, Gemma 2's
    # soft-capping) to the unembedding's matmul
    while head is not None and head.op_type in ("Reshape", "Flatten", "Add", "Sub", "Mul", "Div", "Tanh", "Cast"):
        head = producer.get(next((i for i in head.input if i not in constant), ""))
    if head is None or head.op_type not in ("MatMul", "Gemm"):
        return 0
    x = head.input[0]
    if x in producer and producer[x].name.startswith("lens_gemm_"):   # gemm_for_transposed_weights' flattening
        x = producer[x].input[0]
    path, todo = set(), ["logits"]               # nodes between x and the logits
    while todo:
        n = producer.get(todo.pop())
        if n is None or id(n) in path:
            continue
        path.add(id(n))
        todo += [i for i in n.input if i != x]
    tail = f"{x}/lens_tail"
    readers = [k for k, n in enumerate(g.node) if id(n) in path and x in n.input]
    for k in readers:
        n = g.node[k]
        n.input[:] = [tail if i == x else i for i in n.input]
    g.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), LOGITS_FROM),
                          numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), f"{tail}/end"),
                          numpy_helper.from_array(np.array([1], np.int64), f"{tail}/axis")])
    g.input.append(helper.make_tensor_value_info(LOGITS_FROM, onnx.TensorProto.INT64, [1]))
    # placed before its first reader: the graph stays in topological order
    g.node.insert(readers[0], helper.make_node("Slice", [x, LOGITS_FROM, f"{tail}/end", f"{tail}/axis"],
                                               [tail], name="lens_logits_from/Slice"))
    return len(readers)


def float32_logits(model: onnx.ModelProto) -> None:
    """A half-precision graph's logits cast to float32 as they leave it (sampling and the analyses
    read float32; the unembedding itself stays in the graph's precision)."""
    g = model.graph
    producer = next(n for n in g.node if "logits" in n.output)
    half = "logits/lens_half"
    producer.output[:] = [half if o == "logits" else o for o in producer.output]
    g.node.append(helper.make_node("Cast", [half], ["logits"], to=onnx.TensorProto.FLOAT, name="lens_logits/Cast"))
    out = next(o for o in g.output if o.name == "logits")
    out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
