"""Exporting below 32 bits (`lens export --dtype float16`): the GPU path, for a model that fits a GPU
only at half precision.

What is half: the graph's weights, its activations (taps are computed in float16 and handed out as
float32: the analyses run in numpy, which has no fast float16 arithmetic) and its KV cache, and the
weights the JAX port reads (it computes in float32 over them: float16 gradients are too coarse to
attribute with, and the port's numbers then are those of the exported weights). What is checked:
every engine against the float32 PyTorch model, at the tolerance the precision allows.
"""
from __future__ import annotations

from ..errors import LensError

# each tensor's largest difference from the float32 model, relative to its scale (`validate.relative_error`)
# and to each position's (`validate.position_error`: SmolLM2's float32 export reaches 5.4e-5 there, an
# MLP activation at a small position after large ones). float16 keeps 11 significant bits (4.9e-4 a
# rounding), and a forward rounds thousands of times
RTOL = {"float32": 1e-4, "float16": 5e-2}
POSITION_RTOL = {"float32": 1e-3, "float16": 5e-2}
# the taps are found by value: a half graph's against the PyTorch model at the same precision
MATCH_RTOL = {"float32": 1e-4, "float16": 5e-2}


def check_dtype_runs(dtype: str) -> None:
    """Refuse, before any slow work, a precision whose graph cannot run and be validated here."""
    if dtype == "bfloat16":
        raise LensError("--dtype bfloat16 is not supported yet: ONNX Runtime's CPU provider has no bfloat16 kernels "
                        "(a bfloat16 graph runs on CUDA only, where lens cannot validate it yet); use --dtype float16")


def in_dtype(model, dtype: str):
    """The PyTorch model to trace: `model` itself for float32, else a copy in `dtype` (the float32
    model stays the reference)."""
    if dtype == "float32":
        return model
    import copy

    import torch

    return copy.deepcopy(model).to(getattr(torch, dtype))


def itemsize(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def match_rtol(dtype: str) -> float:
    return MATCH_RTOL[dtype]
