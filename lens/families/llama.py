"""Llama (Llama 2 and 3 with any rope scaling lens implements, SmolLM2, TinyLlama): RMSNorm, rotary
positions, grouped-query attention, a SwiGLU MLP; optional attention and MLP biases."""
from __future__ import annotations

from .common import attention_layers, llama_arch, llama_params, llama_torch_modules, refuse

NAME = "llama"
MODEL_TYPES = ("llama",)
DESCRIPTION = "Llama 2/3/3.1/3.2 (rope scaling llama3, linear, dynamic, yarn), SmolLM2, TinyLlama"
EXAMPLES = ("meta-llama/Llama-3.2-1B", "HuggingFaceTB/SmolLM2-135M-Instruct", "TinyLlama/TinyLlama-1.1B-Chat-v1.0")
NORMS = {"input_layernorm": "ln1", "post_attention_layernorm": "ln2"}


def arch(config: dict):
    refuse(config, pretraining_tp=(None, 1))
    return llama_arch(config, NAME)


def params(weights: dict, config: dict, arch, blocks: bool = True) -> dict:
    layers = attention_layers(arch, arch.d_head ** -0.5, 0, config.get("rope_theta", 10000.0),
                              config.get("rope_scaling"), rotary_dim(config, arch))
    return llama_params(weights, arch, NORMS, layers, blocks)


def rotary_dim(config: dict, arch) -> int:
    return int(arch.d_head * (config.get("partial_rotary_factor") or 1.0))


torch_modules = llama_torch_modules
