"""Model families: one adapter module per architecture, after TransformerLens's
`supported_architectures/`. Adding a family (Qwen2, Gemma, ...) is one new file here plus tests.

Every adapter module provides the `Family` protocol below: the Hugging Face config read into
dimensions, the Hugging Face weight names read into a params pytree, the final norm and the
(un)embedding, the PyTorch modules the exporter validates its taps against, and the JAX forward the
attributions differentiate. The ONNX graph needs no adapter: its taps are found by structure
(`lens.export.taps`).
"""
from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from ..errors import LensError

# model_type in config.json -> adapter module; imported on first use (they import JAX)
MODULES = {"gpt2": "lens.families.gpt2", "llama": "lens.families.llama"}
DESCRIPTIONS = {
    "gpt2": "GPT-2 family (gpt2, distilgpt2, gpt2-medium/large/xl, microsoft/DialoGPT-*)",
    "llama": "Llama family (Llama 2/3, SmolLM2, TinyLlama; local folders or GGUF files)",
}


class Family(Protocol):
    NAME: str

    def dims(self, config: dict) -> dict:
        """architecture, n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, n_ctx, d_vocab, norm,
        norm_eps; raises LensError for a config the adapter cannot run (checked at export)."""

    def load_params(self, weights: dict[str, np.ndarray], config: dict, blocks: bool = True) -> tuple[dict, dict]:
        """(params pytree, static settings of the forward); blocks=False: final norm and (un)embedding only."""

    def embedding(self, params) -> np.ndarray: ...     # [d_vocab, d_model] token embeddings
    def unembedding(self, params) -> np.ndarray: ...   # [d_vocab, d_model] output embeddings
    def final_norm(self, x, params, **static): ...     # [n, d] -> [n, d], numpy or JAX arrays

    def torch_modules(self, model) -> tuple:
        """(blocks, final norm, MLP down-projections) of the transformers model."""

    def final_hidden(self, tok_emb, params, lrp: bool = False, **static):
        """JAX forward: [n_seq, d_model] token embeddings -> [n_seq, d_model] after the final norm.
        lrp=True: AttnLRP's backward rules (`layers.py`), same forward values."""


def get(config_or_name: dict | str) -> Family:
    """The adapter of a config.json dict or of an architecture name."""
    name = config_or_name.get("model_type") if isinstance(config_or_name, dict) else config_or_name
    if name not in MODULES:
        raise LensError(f"model type {name!r} is not supported; lens supports: " + "; ".join(DESCRIPTIONS.values()))
    return importlib.import_module(MODULES[name])


def dims(config: dict) -> dict:
    if not isinstance(config, dict):
        raise LensError("config.json is not a JSON object")
    try:
        return get(config).dims(config)
    except KeyError as e:
        raise LensError(f"config.json has no {e.args[0]!r}: not a complete {config.get('model_type')} config") from None
