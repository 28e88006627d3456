"""Find the residual stream, MLP activations and final norm in an exported decoder graph, and expose
them as extra graph outputs named with TransformerLens hook names (`lens.hooks`).

Found by value, not by structure or by the exporter's scope names: the PyTorch model runs a probe
sequence with forward hooks on the modules its family names (`torch_modules`: block outputs, the
MLP down-projection's input, the final norm), the graph runs the same sequence with every float
tensor exposed, and each tap is the first tensor (in topological order, so the producer rather than
a copy) whose value equals PyTorch's. No assumption about how many norms a block has, where they
sit, or how the exporter decomposed them holds a family back (Gemma 2's four norms per block,
OLMo-2's post-norms, GPT-NeoX's parallel branches).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .. import hooks
from ..errors import LensError

PROBE_TOKENS = 7
MATCH_RTOL = 1e-4  # of the tensor's scale


def find_taps(graph_path, torch_model, family, n_layers: int, vocab: int, seed: int = 0) -> dict[str, str]:
    """{hook name: tensor name} for every tap of `hooks.all_taps(n_layers)`, matched by value on a
    probe sequence; raises LensError naming a tap no tensor matches."""
    import onnxruntime as ort

    from .validate import relative_error, torch_taps

    ids = np.random.default_rng(seed).integers(0, vocab, size=(1, PROBE_TOKENS))
    want = torch_taps(torch_model, ids, family)
    model = onnx.load(str(graph_path), load_external_data=False)
    candidates = _float_tensors(model)
    del model.graph.output[:]
    model.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in candidates)
    probe = graph_path.with_name("lens_probe.onnx")  # beside the graph: it reads the same external data
    onnx.save_model(model, str(probe))
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every tensor stays
        session = ort.InferenceSession(str(probe), opts, providers=["CPUExecutionProvider"])
        feed = _probe_feed(session, ids)
        values = dict(zip(candidates, session.run(candidates, feed)))
    finally:
        probe.unlink(missing_ok=True)
    taps = {}
    for hook in hooks.all_taps(n_layers):
        ref = want[hook]
        match = next((name for name in candidates if values[name].shape == ref.shape
                      and relative_error(values[name], ref) <= MATCH_RTOL), None)
        if match is None:
            raise LensError(f"no tensor of the exported graph equals PyTorch's {hook}: unsupported model structure")
        taps[hook] = match
    return taps


def _float_tensors(model: onnx.ModelProto) -> list[str]:
    """Every node output that shape inference types as float32 with rank 3 ([batch, seq, features]),
    in topological order."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type for v in inferred.graph.value_info}
    out = []
    for node in model.graph.node:
        for name in node.output:
            t = types.get(name)
            if t is not None and t.elem_type == onnx.TensorProto.FLOAT and len(t.shape.dim) == 3:
                out.append(name)
    return out


def _probe_feed(session, ids: np.ndarray) -> dict:
    n = ids.shape[1]
    feed = {"input_ids": ids.astype(np.int64)}
    for i in session.get_inputs():
        if i.name == "attention_mask":
            feed[i.name] = np.ones((1, n), np.int64)
        elif i.name == "position_ids":
            feed[i.name] = np.arange(n, dtype=np.int64)[None]
        elif i.name.startswith("past_key_values"):
            shape = [1 if d == "batch_size" else 0 if isinstance(d, str) or d is None else d for d in i.shape]
            feed[i.name] = np.zeros(shape, np.float32)
    return feed


def add_tap_outputs(graph_path, taps: dict[str, str], d_mlp: int, d_model: int) -> None:
    """Expose each tapped tensor as a graph output named by its hook (through an Identity node);
    only the graph file is rewritten, its external data stays."""
    model = onnx.load(str(graph_path), load_external_data=False)
    g = model.graph
    for hook, tensor in taps.items():
        g.node.append(helper.make_node("Identity", [tensor], [hook], name=f"lens_tap/{hook}"))
        dims: list[str | int] = ["batch_size", "sequence_length", d_mlp if ".mlp." in hook else d_model]
        g.output.append(helper.make_tensor_value_info(hook, onnx.TensorProto.FLOAT, dims))
    onnx.save_model(model, str(graph_path))
