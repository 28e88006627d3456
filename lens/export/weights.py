"""One copy of the weights on disk. The graph keeps every initializer in `model.onnx.data` (ONNX
external data), and the manifest maps each Hugging Face tensor to its bytes there: the same bytes,
or their transpose where the exporter folded a Linear weight into a MatMul (Llama). The JAX ports
and the logit lens read those bytes through `ModelFolder.weights()`; tensors that no initializer
holds go to a small `model.safetensors`. (lens 0.1 stored the weights twice: 538 MB + 539 MB for
SmolLM2's 135M parameters.)"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..store import GRAPH, GRAPH_DATA, WEIGHTS


def save_graph(model, work: Path) -> None:
    """Write the graph with every initializer of 1 KB or more in one external-data file beside it
    (smaller ones, such as the shapes Reshape reads, stay inline where ONNX Runtime expects them)."""
    import onnx

    onnx.save_model(model, str(work / GRAPH), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=GRAPH_DATA, size_threshold=1024, convert_attribute=False)


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
        found = by_bytes.get((a.dtype.str, a.nbytes, _digest(a.view(np.uint8).ravel())))
        transposed = False
        if found is None and a.ndim == 2:
            at = np.ascontiguousarray(a.T)
            found = by_bytes.get((at.dtype.str, at.nbytes, _digest(at.view(np.uint8).ravel())))
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

