"""OLMo-2: no norm before a branch, an RMSNorm after each (before the residual add), and an RMSNorm
over all heads of q and k."""
from __future__ import annotations

from .common import attention_layers, llama_arch, llama_params, llama_torch_modules

NAME = "olmo2"
MODEL_TYPES = ("olmo2",)
DESCRIPTION = "OLMo-2 (post-norms, q/k norm)"
EXAMPLES = ("allenai/OLMo-2-0425-1B", "allenai/OLMo-2-1124-7B")
NORMS = {"post_attention_layernorm": "ln1_post", "post_feedforward_layernorm": "ln2_post"}


def arch(config: dict):
    return llama_arch(config, NAME)


def params(weights: dict, config: dict, arch, blocks: bool = True) -> dict:
    layers = attention_layers(arch, arch.d_head ** -0.5, 0, config.get("rope_theta", 10000.0),
                              config.get("rope_scaling"))
    return llama_params(weights, arch, NORMS, layers, blocks)


torch_modules = llama_torch_modules
