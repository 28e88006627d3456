"""Gemma: Llama with norms that scale by 1 + w, embeddings scaled by sqrt(d_model) and a GeGLU MLP."""
from __future__ import annotations

from .common import attention_layers, llama_arch, llama_params, llama_torch_modules
from .llama import NORMS

NAME = "gemma"
MODEL_TYPES = ("gemma",)
DESCRIPTION = "Gemma 1 (1 + w norms, sqrt(d) embedding scale, GeGLU)"
EXAMPLES = ("google/gemma-2b", "google/gemma-7b")


def arch(config: dict):
    return llama_arch(config, NAME, norm_offset=1.0, embed_scale=config["hidden_size"] ** 0.5)


def params(weights: dict, config: dict, arch, blocks: bool = True) -> dict:
    layers = attention_layers(arch, arch.d_head ** -0.5, 0, config.get("rope_theta", 10000.0),
                              config.get("rope_scaling"))
    return llama_params(weights, arch, NORMS, layers, blocks)


torch_modules = llama_torch_modules
