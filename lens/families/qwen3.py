"""Qwen3: Llama with an RMSNorm over each head of q and k (before the rotation)."""
from __future__ import annotations

from .common import attention_layers, llama_arch, llama_params, llama_torch_modules, windows
from .llama import NORMS

NAME = "qwen3"
MODEL_TYPES = ("qwen3",)
DESCRIPTION = "Qwen3 dense models (q/k norm)"
EXAMPLES = ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B")


def arch(config: dict):
    return llama_arch(config, NAME)


def params(weights: dict, config: dict, arch, blocks: bool = True) -> dict:
    w = windows(config, arch.n_layers) if config.get("use_sliding_window") else [0] * arch.n_layers
    layers = attention_layers(arch, arch.d_head ** -0.5, w, config.get("rope_theta", 10000.0),
                              config.get("rope_scaling"))
    return llama_params(weights, arch, NORMS, layers, blocks)


torch_modules = llama_torch_modules
