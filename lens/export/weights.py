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


def save_graph(model, work: Path, state_dict: dict[str, np.ndarray] | None = None) -> None:
    """Write the graph with every initializer of 1 KB or more in one external-data file beside it
    (smaller ones, such as the shapes Reshape reads, stay inline where ONNX Runtime expects them),
    each at a 64-byte boundary; given the Hugging Face state dict, in layer-major order."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data, set_external_data, uses_external_data

    if state_dict is not None:
        rank = layer_major_order(model.graph.initializer, state_dict)
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


def layer_major_order(initializers, state_dict: dict[str, np.ndarray]) -> dict[str, tuple]:
    """{initializer name: sort key} that keeps the initializers' order except that the initializers
    holding one per-layer Hugging Face tensor (byte for byte or transposed, as `map_weights` finds
    them) follow each other in layer order, where the tensor's first one was."""
    from onnx import numpy_helper

    index = {}
    for i, init in enumerate(initializers):
        if init.HasField("raw_data") and len(init.raw_data) >= 64:
            index.setdefault(_key(numpy_helper.to_array(init)), i)
    role = {}  # initializer index -> (per-layer tensor name with the layer left out, layer)
    for hf, array in state_dict.items():
        m = LAYER_NAME.match(hf)
        if m is None:
            continue
        a = np.ascontiguousarray(array)
        i = index.get(_key(a))
        if i is None and a.ndim == 2:
            i = index.get(_key(np.ascontiguousarray(a.T)))
        if i is not None:
            role.setdefault(i, (f"{m[1]}.*.{m[3]}", int(m[2])))
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


def map_weights(work: Path, state_dict: dict[str, np.ndarray]) -> dict[str, dict]:
    """The manifest's weight map: for each Hugging Face tensor found among the initializers (byte
    for byte, or transposed), where its bytes are; the others are written to model.safetensors."""
    table = initializer_table(work)
    data = np.memmap(work / GRAPH_DATA, dtype=np.uint8, mode="r")
    by_bytes = {}
    for name, t in table.items():
        if t["length"] >= 64:  # small constants (shapes, scalars) are no weights
            key = (t["dtype"], t["length"], _digest(data[t["offset"]:t["offset"] + t["length"]]))
            by_bytes.setdefault(key, name)
    mapping, rest = {}, {}
    for hf, array in state_dict.items():
        a = np.ascontiguousarray(array)
        found = by_bytes.get(_key(a))
        transposed = False
        if found is None and a.ndim == 2:
            found = by_bytes.get(_key(np.ascontiguousarray(a.T)))
            transposed = found is not None
        if found is None:
            rest[hf] = a
            continue
        t = table[found]
        mapping[hf] = dict(file=GRAPH_DATA, offset=t["offset"], dtype=t["dtype"], shape=t["shape"],
                           transposed=transposed)
    del data
    if rest:
        from safetensors.numpy import save_file
        save_file(rest, str(work / WEIGHTS))
    return mapping


def _digest(b) -> str:
    return hashlib.blake2b(memoryview(np.ascontiguousarray(b)), digest_size=16).hexdigest()


def state_dict(model) -> dict[str, np.ndarray]:
    """A torch model's tensors as float32 numpy arrays, shared (tied) tensors included once per name."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}

