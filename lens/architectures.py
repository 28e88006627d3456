"""The model families lens supports, and their dimensions read from a Hugging Face config.json.

Used by the exporter (manifest), the JAX port and the logit lens; no heavy imports.
"""
from __future__ import annotations

from .errors import LensError

FAMILIES = {
    "gpt2": "GPT-2 family (gpt2, distilgpt2, gpt2-medium/large/xl, microsoft/DialoGPT-*)",
    "llama": "Llama family (Llama 2/3, SmolLM2, TinyLlama; local folders or GGUF files)",
}


def check_supported(config: dict) -> str:
    arch = config.get("model_type")
    if arch not in FAMILIES:
        raise LensError(f"model type {arch!r} is not supported; lens supports: " + "; ".join(FAMILIES.values()))
    return arch


def dims(config: dict) -> dict:
    """Family-neutral dimensions: layers, widths, heads, context, vocabulary, normalisation."""
    arch = check_supported(config)
    if arch == "gpt2":
        d = config["n_embd"]
        return dict(architecture=arch, n_layers=config["n_layer"], d_model=d, n_heads=config["n_head"],
                    n_kv_heads=config["n_head"], d_head=d // config["n_head"],
                    d_mlp=config.get("n_inner") or 4 * d, n_ctx=config["n_positions"],
                    d_vocab=config["vocab_size"], norm="layernorm",
                    norm_eps=float(config.get("layer_norm_epsilon", 1e-5)))
    d, heads = config["hidden_size"], config["num_attention_heads"]
    return dict(architecture=arch, n_layers=config["num_hidden_layers"], d_model=d, n_heads=heads,
                n_kv_heads=config.get("num_key_value_heads") or heads,
                d_head=config.get("head_dim") or d // heads, d_mlp=config["intermediate_size"],
                n_ctx=config["max_position_embeddings"], d_vocab=config["vocab_size"], norm="rmsnorm",
                norm_eps=float(config.get("rms_norm_eps", 1e-6)))
