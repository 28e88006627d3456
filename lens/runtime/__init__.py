"""ONNX Runtime engine: opens an exported model folder, generates with a KV cache, and runs the full
sequence returning logits, every hidden state and every MLP activation as numpy arrays.

Imports only numpy, onnxruntime and tokenizers: no torch, JAX, scikit-learn or Bokeh on this path
(the attribution engine and the analyses sit on top of it, in `lens.pipeline`).
  model.py       `Model` (the session opened on a thread, `session_run`, full passes) and `load`
  prompts.py     prompts and tokens             generation.py   KV-cached generation, forced continuations
  masked.py      masked passes (faithfulness)   results.py      `Generation`, `Trace`
"""
from .masked import prefix_groups
from .model import Model, _providers, load
from .results import Generation, Trace

__all__ = ["Model", "load", "Generation", "Trace", "prefix_groups", "_providers"]
