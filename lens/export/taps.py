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


def find_taps(graph_path, torch_model, family, n_layers: int, vocab: int, seed: int = 0,
              rtol: float = MATCH_RTOL, attention: bool = False) -> dict[str, str]:
    """{hook name: tensor name} for every tap of `hooks.all_taps(n_layers)` (and, with `attention`,
    every layer's attention probabilities: `hooks.attention_taps`, PyTorch's `output_attentions`),
    matched by value on a probe sequence (against `torch_model` in the graph's precision, within `rtol`
    of the scale); raises LensError naming a tap no tensor matches. The heads' outputs
    (`hooks.head_taps`, what head interventions edit) are added where a tensor matches: a graph
    without them still explains, and refuses head interventions by name."""
    import onnxruntime as ort

    from .validate import position_error, torch_taps

    ids = np.random.default_rng(seed).integers(0, vocab, size=(1, PROBE_TOKENS))
    want = torch_taps(torch_model, ids, family, attention=attention)
    model = onnx.load(str(graph_path), load_external_data=False)
    candidates = _float_tensors(model, ranks=(3, 4) if attention else (3,))
    del model.graph.output[:]
    model.graph.output.extend(helper.make_tensor_value_info(name, elem, None) for name, elem in candidates.items())
    probe = graph_path.with_name("lens_probe.onnx")  # beside the graph: it reads the same external data
    onnx.save_model(model, str(probe))
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every tensor stays
        session = ort.InferenceSession(str(probe), opts, providers=["CPUExecutionProvider"])
        feed = _probe_feed(session, ids)
        values = dict(zip(candidates, session.run(list(candidates), feed)))
    finally:
        probe.unlink(missing_ok=True)
    taps = {}
    optional = [h for h in hooks.head_taps(n_layers) if h in want]
    for hook in hooks.all_taps(n_layers) + (hooks.attention_taps(n_layers) if attention else []) + optional:
        ref = np.asarray(want[hook], np.float32)
        # per position: at half precision an error relative to the attention sink's scale hides a wrong tensor
        errors = {name: position_error(v, ref) for name, v in values.items() if v.shape == ref.shape}
        best = min(errors.values(), default=np.inf)
        if not best <= rtol and hook in optional:
            continue
        if not best <= rtol:
            raise LensError(f"no tensor of the exported graph equals PyTorch's {hook}: unsupported model structure")
        # the first tensor as close as the closest: the producer rather than a copy or a cast of it (at half
        # precision another tensor may also come within rtol, e.g. the residual stream before a small branch)
        taps[hook] = next(name for name, e in errors.items() if e <= best * (1 + 1e-6))
    return taps


FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


def _float_tensors(model: onnx.ModelProto, ranks=(3,)) -> dict[str, int]:
    """{name: element type} of every node output that shape inference types as float32 or float16
    with one of `ranks` (3: [batch, seq, features]; 4: [batch, heads, seq, keys]), in topological order."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type for v in inferred.graph.value_info}
    out = {}
    for node in model.graph.node:
        for name in node.output:
            t = types.get(name)
            if t is not None and t.elem_type in FLOATS and len(t.shape.dim) in ranks:
                out[name] = t.elem_type
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
            feed[i.name] = np.zeros(shape, np.float16 if i.type == "tensor(float16)" else np.float32)
    return feed


def add_tap_outputs(graph_path, taps: dict[str, str], d_mlp: int, d_model: int, n_heads: int = 0,
                    d_z: int = 0) -> None:
    """Expose each tapped tensor as a float32 graph output named by its hook (through an Identity
    node, or a Cast in a half-precision graph); only the graph file is rewritten, its external data stays."""
    model = onnx.load(str(graph_path), load_external_data=False)
    g = model.graph
    half = {name for name, elem in _float_tensors(model, (3, 4)).items() if elem == onnx.TensorProto.FLOAT16}
    for hook, tensor in taps.items():
        g.node.append(helper.make_node("Cast", [tensor], [hook], to=onnx.TensorProto.FLOAT, name=f"lens_tap/{hook}")
                      if tensor in half else helper.make_node("Identity", [tensor], [hook], name=f"lens_tap/{hook}"))
        dims: list[str | int] = (["batch_size", n_heads, "sequence_length", "total_sequence_length"]
                                 if hook.endswith(".hook_pattern") else
                                 ["batch_size", "sequence_length",
                                  d_mlp if ".mlp." in hook else d_z if hook.endswith(".hook_z") else d_model])
        g.output.append(helper.make_tensor_value_info(hook, onnx.TensorProto.FLOAT, dims))
    onnx.save_model(model, str(graph_path))
