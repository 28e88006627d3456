"""Mistral: Llama with a sliding attention window on every layer."""
from __future__ import annotations

from .common import attention_layers, llama_arch, llama_params, llama_torch_modules, windows
from .llama import NORMS

NAME = "mistral"
MODEL_TYPES = ("mistral",)
DESCRIPTION = "Mistral 7B (sliding window), Ministral"
EXAMPLES = ("mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.3")


def arch(config: dict):
    return llama_arch(config, NAME)


def params(weights: dict, config: dict, arch, blocks: bool = True) -> dict:
    layers = attention_layers(arch, arch.d_head ** -0.5, windows(config, arch.n_layers),
                              config.get("rope_theta", 10000.0), config.get("rope_scaling"))
    return llama_params(weights, arch, NORMS, layers, blocks)


torch_modules = llama_torch_modules
