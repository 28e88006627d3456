"""Qwen2 and Qwen2.5: Llama with biases on q, k and v; a sliding window only where
`use_sliding_window` (and `layer_types`) ask for one."""
from __future__ import annotations

from .common import attention_layers, llama_arch, llama_params, llama_torch_modules, windows
from .llama import NORMS

NAME = "qwen2"
MODEL_TYPES = ("qwen2",)
DESCRIPTION = "Qwen2, Qwen2.5 (q/k/v biases)"
EXAMPLES = ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B-Instruct")


def arch(config: dict):
    return llama_arch(config, NAME)


def params(weights: dict, config: dict, arch, blocks: bool = True) -> dict:
    w = windows(config, arch.n_layers) if config.get("use_sliding_window") else [0] * arch.n_layers
    layers = attention_layers(arch, arch.d_head ** -0.5, w, config.get("rope_theta", 10000.0),
                              config.get("rope_scaling"))
    return llama_params(weights, arch, NORMS, layers, blocks)


torch_modules = llama_torch_modules
