"""Granite: Llama with four multipliers (embedding, attention scale, residual branches, logits)."""
from __future__ import annotations

from .common import attention_layers, llama_arch, llama_params, llama_torch_modules
from .llama import NORMS

NAME = "granite"
MODEL_TYPES = ("granite",)
DESCRIPTION = "IBM Granite 3 dense models (embedding, attention, residual and logit multipliers)"
EXAMPLES = ("ibm-granite/granite-3.1-2b-base",)


def arch(config: dict):
    return llama_arch(config, NAME, embed_scale=float(config.get("embedding_multiplier", 1.0)),
                      residual_scale=float(config.get("residual_multiplier", 1.0)),
                      logit_scale=float(config.get("logits_scaling", 1.0)))


def params(weights: dict, config: dict, arch, blocks: bool = True) -> dict:
    layers = attention_layers(arch, float(config.get("attention_multiplier", arch.d_head ** -0.5)), 0,
                              config.get("rope_theta", 10000.0), config.get("rope_scaling"))
    return llama_params(weights, arch, NORMS, layers, blocks)


torch_modules = llama_torch_modules
