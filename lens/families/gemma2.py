"""Gemma 2: Gemma with a norm before and after each branch, soft-capped attention scores and logits,
a sliding window on alternate layers (`layer_types`) and the scale query_pre_attn_scalar^-1/2."""
from .common import SANDWICH_NORMS, LlamaLike, activation


def pre_attn_scale(config: dict, arch) -> float:
    return float(config.get("query_pre_attn_scalar", arch.d_head)) ** -0.5


def _cap(key):
    return lambda c: None if c.get(key) is None else float(c[key])


GEMMA2_FLAGS = dict(norms=SANDWICH_NORMS, scale=pre_attn_scale, norm_offset=1.0,
                    embed_scale=lambda c: c["hidden_size"] ** 0.5,
                    act=lambda c: activation(c, c.get("hidden_activation", "gelu_pytorch_tanh")),
                    attn_softcap=_cap("attn_logit_softcapping"), final_softcap=_cap("final_logit_softcapping"))

family = LlamaLike("gemma2", "Gemma 2 (sandwich norms, attention and final logit soft-capping, alternating sliding window)",
                   ("google/gemma-2-2b", "google/gemma-2-9b-it"), **GEMMA2_FLAGS)
