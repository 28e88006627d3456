"""Phi-3: Llama with fused q|k|v and gate|up projections, partial rotary and a sliding window."""
from __future__ import annotations

from .common import attention_layers, llama_arch, llama_params, llama_torch_modules, windows
from .llama import NORMS, rotary_dim

NAME = "phi3"
MODEL_TYPES = ("phi3",)
DESCRIPTION = "Phi-3, Phi-3.5, Phi-4 mini (fused projections; longrope refused)"
EXAMPLES = ("microsoft/Phi-3-mini-4k-instruct", "microsoft/phi-4")


def arch(config: dict):
    return llama_arch(config, NAME)


def params(weights: dict, config: dict, arch, blocks: bool = True) -> dict:
    layers = attention_layers(arch, arch.d_head ** -0.5, windows(config, arch.n_layers),
                              config.get("rope_theta", 10000.0), config.get("rope_scaling"), rotary_dim(config, arch))
    return llama_params(weights, arch, NORMS, layers, blocks)


torch_modules = llama_torch_modules
