"""Interventions inside the ONNX graph: at each hooked tensor T the graph gains two inputs and computes
`T * scale + add` in its place, so every later node (and the tap itself) reads the edited value, and
generation keeps its KV cache. The rewrite is made when a model is opened with interventions, from the
stored graph (its weights are not copied: the rewritten graph, held in memory, reads the folder's external data), so every
existing export takes them. Where no position is edited the inputs are ones and zeros: x * 1 + 0 is x,
bit for bit."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import LensError
from ..store import GRAPH


def scale_input(hook: str) -> str:
    return f"lens_scale/{hook}"


def add_input(hook: str) -> str:
    return f"lens_add/{hook}"


def rewrite(graph_path: Path, edits, half: bool) -> bytes:
    """The serialized graph with the hooks of `edits` (`lens.interventions.Edits`, canonical tap names of
    the graph) editable; a LensError for a hook the graph does not tap."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(graph_path), load_external_data=False)
    g = model.graph
    tapped = {n.output[0]: n.input[0] for n in g.node if n.name.startswith("lens_tap/")}
    nodes = []
    for hook in edits.hooks:
        if hook not in tapped:
            raise LensError(f"the ONNX graph has no tap {hook} (`Model.editable` says why)")
        t = tapped[hook]
        s_in, a_in = scale_input(hook), add_input(hook)
        for name in (s_in, a_in):
            g.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                         ["batch_size", "sequence_length", edits.width(hook)]))
        s, a = s_in, a_in
        if half:  # the graph computes in float16: its edit does too
            s, a = f"{s_in}/half", f"{a_in}/half"
            nodes += [helper.make_node("Cast", [s_in], [s], to=TensorProto.FLOAT16, name=f"lens_edit/{hook}/cast_s"),
                      helper.make_node("Cast", [a_in], [a], to=TensorProto.FLOAT16, name=f"lens_edit/{hook}/cast_a")]
        scaled, edited = f"lens_edit/{hook}/scaled", f"lens_edit/{hook}"
        for n in g.node:  # every reader of T, the tap included, reads the edited tensor
            for i, name in enumerate(n.input):
                if name == t:
                    n.input[i] = edited
        nodes += [helper.make_node("Mul", [t, s], [scaled], name=f"lens_edit/{hook}/mul"),
                  helper.make_node("Add", [scaled, a], [edited], name=f"lens_edit/{hook}/add")]
    # an edit's nodes must come after T's producer and before its readers: after the producer is enough
    # for ONNX Runtime, which sorts topologically; the checker wants a sorted list, so insert each after it
    order = list(g.node)
    for node in nodes:
        src = node.input[0]
        at = next((i for i, n in enumerate(order) if src in n.output), -1)
        order.insert(at + 1, node)
    del g.node[:]
    g.node.extend(order)
    return model.SerializeToString()


def open_session(folder: Path, edits, half: bool, opts, providers):
    """An ONNX Runtime session of the graph in `folder` with the hooks of `edits` editable, built from the rewritten
    graph in memory; ONNX Runtime reads its external data (the weights) from `folder`."""
    import onnxruntime as ort

    graph = rewrite(folder / GRAPH, edits, half)
    opts = _copy(opts)
    opts.add_session_config_entry("session.model_external_initializers_file_folder_path", str(folder.resolve()))
    return ort.InferenceSession(graph, opts, providers=providers)


def _copy(opts):
    """A fresh SessionOptions with `opts`' thread count and log level (config entries cannot be removed),
    without weight prepacking."""
    import onnxruntime as ort

    out = ort.SessionOptions()
    out.log_severity_level = opts.log_severity_level
    out.intra_op_num_threads = opts.intra_op_num_threads
    # the edited graph reads the weights where they lie instead of prepacking its own copy: +25 MB for
    # SmolLM2 instead of +646 MB, for 1.2x the generation time (bench/bench_interventions.py)
    out.add_session_config_entry("session.disable_prepacking", "1")
    return out


def feed(edits, positions: np.ndarray) -> dict[str, np.ndarray]:
    """The graph inputs of `edits` (`lens.interventions.Edits`) for a call's positions [batch, seq]
    (absolute: a masked pass or a left-padded batch numbers its rows itself)."""
    out = {}
    lo, hi = int(positions.min()), int(positions.max()) + 1
    for hook in edits.hooks:
        s, a = edits.rows(hook, lo, hi)
        out[scale_input(hook)], out[add_input(hook)] = s[positions - lo], a[positions - lo]
    return out
