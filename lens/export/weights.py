"""One copy of the weights on disk. The graph keeps every initializer in `model.onnx.data` (ONNX
external data), and the manifest maps each Hugging Face tensor to its bytes there: the same bytes,
or their transpose where the exporter folded a Linear weight into a MatMul (Llama). The JAX ports
and the logit lens read those bytes through `ModelFolder.weights()`; tensors that no initializer
holds go to a small `model.safetensors`. (lens 0.1 stored the weights twice: 538 MB + 539 MB for
SmolLM2's 135M parameters.)

The graph's initializers are laid out layer-major: each per-layer tensor's layers back to back, in
layer order, every tensor 64-byte aligned. The JAX ports then read a tensor's layers as one
[n_layers, ...] view of the file (`families.layers.stack`), which JAX on a CPU uses in place: no
stacking copy (~0.4-1 s for SmolLM2 in a fresh process) and no second copy in JAX's buffers."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from ..store import GRAPH, GRAPH_DATA, WEIGHTS


ALIGN = 64  # bytes: what JAX on a CPU needs to use an array's memory in place
LAYER_NAME = re.compile(r"^(.+?)\.(\d+)\.(.+)$")  # model.layers.3.mlp.up_proj.weight, transformer.h.3.ln_1.bias


def match_initializers(initializers, state_dict: dict[str, np.ndarray]) -> dict[str, tuple[str, bool]]:
    """{Hugging Face name: (initializer name, transposed)} for each tensor an initializer holds byte
    for byte, or transposed (a Linear the exporter folded into a MatMul). Equal bytes (zero biases)
    match the first initializer holding them."""
    from onnx import numpy_helper

    index = {}
    for init in initializers:
        if init.HasField("raw_data") and len(init.raw_data) >= 64:  # small constants (shapes, scalars) are no weights
            index.setdefault(_key(numpy_helper.to_array(init)), init.name)
    out = {}
    for hf, array in state_dict.items():
        a = np.ascontiguousarray(array)
        if (name := index.get(_key(a))) is not None:
            out[hf] = (name, False)
        elif a.ndim == 2 and (name := index.get(_key(np.ascontiguousarray(a.T)))) is not None:
            out[hf] = (name, True)
    return out


def save_graph(model, work: Path, matches: dict[str, tuple[str, bool]]) -> None:
    """Write the graph with every initializer of 1 KB or more in one external-data file beside it
    (smaller ones, such as the shapes Reshape reads, stay inline where ONNX Runtime expects them),
    each at a 64-byte boundary, in layer-major order (`matches`: `match_initializers`)."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data, set_external_data, uses_external_data

    rank = layer_major_order(model.graph.initializer, matches)
    model.graph.initializer.sort(key=lambda t: rank[t.name])
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=GRAPH_DATA, size_threshold=1024,
                                   convert_attribute=False)
    offset = 0
    for tensor in model.graph.initializer:  # ONNX writes them in this order, padding up to each offset
        if uses_external_data(tensor):
            offset = -(-offset // ALIGN) * ALIGN
            set_external_data(tensor, GRAPH_DATA, offset=offset, length=len(tensor.raw_data))
            offset += len(tensor.raw_data)
    onnx.save_model(model, str(work / GRAPH))


def layer_major_order(initializers, matches: dict[str, tuple[str, bool]]) -> dict[str, tuple]:
    """{initializer name: sort key} that keeps the initializers' order except that the initializers
    holding one per-layer Hugging Face tensor follow each other in layer order, where the tensor's
    first one was."""
    index = {init.name: i for i, init in enumerate(initializers)}
    role = {}  # initializer index -> (per-layer tensor name with the layer left out, layer)
    for hf, (name, _) in matches.items():
        m = LAYER_NAME.match(hf)
        if m is not None:
            role.setdefault(index[name], (f"{m[1]}.*.{m[3]}", int(m[2])))
    first = {}
    for i, (name, _) in role.items():
        first[name] = min(first.get(name, i), i)
    return {init.name: (first[role[i][0]], role[i][1]) if i in role else (i, -1) for i, init in enumerate(initializers)}


def _key(a: np.ndarray) -> tuple:
    return a.dtype.str, a.nbytes, _digest(a.view(np.uint8).ravel())


def initializer_table(work: Path) -> dict[str, dict]:
    """{initializer name: {offset, length, dtype, shape}} in the external-data file."""
    import onnx
    from onnx import helper

    model = onnx.load(str(work / GRAPH), load_external_data=False)
    out = {}
    for init in model.graph.initializer:
        info = {e.key: e.value for e in init.external_data}
        if info.get("location") != GRAPH_DATA:
            continue
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type))
        out[init.name] = dict(offset=int(info.get("offset", 0)), length=int(info["length"]), dtype=dtype.str,
                              shape=[int(d) for d in init.dims])
    return out


def map_weights(work: Path, state_dict: dict[str, np.ndarray], matches: dict[str, tuple[str, bool]]) -> dict[str, dict]:
    """The manifest's weight map: for each Hugging Face tensor an initializer in the external-data
    file holds (`matches`), where its bytes are; the others are written to model.safetensors."""
    table = initializer_table(work)
    mapping, rest = {}, {}
    for hf, array in state_dict.items():
        name, transposed = matches.get(hf, (None, False))
        if name not in table:  # no initializer, or one small enough to stay inline in the graph
            rest[hf] = np.ascontiguousarray(array)
            continue
        t = table[name]
        mapping[hf] = dict(file=GRAPH_DATA, offset=t["offset"], dtype=t["dtype"], shape=t["shape"],
                           transposed=transposed)
    if rest:
        from safetensors.numpy import save_file
        save_file(rest, str(work / WEIGHTS))
    return mapping


def _digest(b) -> str:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(b)), digest_size=16).hexdigest()


def state_dict(model) -> dict[str, np.ndarray]:
    """A torch model's tensors as float32 numpy arrays, shared (tied) tensors included once per name."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}

