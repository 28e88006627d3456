"""Gemma 3 (text): Gemma 2 with an RMSNorm over each head of q and k, and two RoPE bases: local
(sliding-window) layers rotate with rope_local_base_freq and no scaling, global ones with
rope_theta and rope_scaling."""
from __future__ import annotations

from . import gemma2
from .common import attention_layers, llama_params, llama_torch_modules, windows

NAME = "gemma3"
MODEL_TYPES = ("gemma3_text",)
DESCRIPTION = "Gemma 3 text models (q/k norm, local/global RoPE bases, layer_types)"
EXAMPLES = ("google/gemma-3-270m", "google/gemma-3-1b-it")


def arch(config: dict):
    return gemma2.arch(config, NAME)


def params(weights: dict, config: dict, arch, blocks: bool = True) -> dict:
    w = windows(config, arch.n_layers)
    local = config.get("rope_local_base_freq", 10000.0)
    bases = [local if win else config.get("rope_theta", 1_000_000.0) for win in w]
    scaling = [None if win else config.get("rope_scaling") for win in w]
    layers = attention_layers(arch, float(config.get("query_pre_attn_scalar", arch.d_head)) ** -0.5, w,
                              bases, scaling)
    return llama_params(weights, arch, gemma2.NORMS, layers, blocks)


torch_modules = llama_torch_modules
