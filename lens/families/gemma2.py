"""Gemma 2: Gemma with a norm before and after each branch, soft-capped attention scores and logits,
a sliding window on alternate layers (`layer_types`) and the scale query_pre_attn_scalar^-1/2."""
from __future__ import annotations

from .common import activation, attention_layers, llama_arch, llama_params, llama_torch_modules, windows

NAME = "gemma2"
MODEL_TYPES = ("gemma2",)
DESCRIPTION = "Gemma 2 (sandwich norms, attention and final logit soft-capping, alternating sliding window)"
EXAMPLES = ("google/gemma-2-2b", "google/gemma-2-9b-it")
NORMS = {"input_layernorm": "ln1", "post_attention_layernorm": "ln1_post",
         "pre_feedforward_layernorm": "ln2", "post_feedforward_layernorm": "ln2_post"}


def arch(config: dict, family: str = NAME):
    return llama_arch(config, family, norm_offset=1.0, embed_scale=config["hidden_size"] ** 0.5,
                      act=activation(config, config.get("hidden_activation", "gelu_pytorch_tanh")),
                      attn_softcap=_float(config.get("attn_logit_softcapping")),
                      final_softcap=_float(config.get("final_logit_softcapping")))


def _float(v):
    return None if v is None else float(v)


def params(weights: dict, config: dict, arch, blocks: bool = True) -> dict:
    layers = attention_layers(arch, float(config.get("query_pre_attn_scalar", arch.d_head)) ** -0.5,
                              windows(config, arch.n_layers), config.get("rope_theta", 10000.0),
                              config.get("rope_scaling"))
    return llama_params(weights, arch, NORMS, layers, blocks)


torch_modules = llama_torch_modules
