"""Llama family (Llama 2/3 without rope scaling, SmolLM2, TinyLlama): RMSNorm, rotary position
embeddings, grouped-query attention and a SwiGLU MLP, in the same pure-function style as `gpt2.py`."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import LensError
from .layers import activation, multi_head, product, rms_norm, scan_blocks, split_heads, stack

NAME = "llama"


def dims(config: dict) -> dict:
    """Dimensions; refuses what the JAX port does not implement, so the export stops before any work."""
    scaling = config.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise LensError(f"rope scaling {scaling!r} is not supported by lens (Llama without rope scaling only)")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise LensError("Llama models with attention or MLP biases are not supported by lens")
    d, heads = config["hidden_size"], config["num_attention_heads"]
    return dict(architecture=NAME, n_layers=config["num_hidden_layers"], d_model=d, n_heads=heads,
                n_kv_heads=config.get("num_key_value_heads") or heads, d_head=config.get("head_dim") or d // heads,
                d_mlp=config["intermediate_size"], n_ctx=config["max_position_embeddings"],
                d_vocab=config["vocab_size"], norm="rmsnorm", norm_eps=float(config.get("rms_norm_eps", 1e-6)))


# ---------------------------------------------------------------- weights (Hugging Face names)
def load_params(weights: dict[str, np.ndarray], config: dict, blocks: bool = True) -> tuple[dict, dict]:
    """Nested params (Linear weights transposed to [in, out]) and the static settings.
    `blocks=False` gives only what the logit lens reads (no copies)."""
    dims(config)
    t = lambda name: weights[f"model.{name}"]
    lin = lambda name: np.ascontiguousarray(t(f"{name}.weight").T)
    params = {"embed": t("embed_tokens.weight"), "norm": t("norm.weight")}
    if "lm_head.weight" in weights:  # untied output embedding
        params["unembed"] = weights["lm_head.weight"]
    if blocks:
        params["blocks"] = stack([{"attn_norm": t(f"layers.{l}.input_layernorm.weight"),
                                   "mlp_norm": t(f"layers.{l}.post_attention_layernorm.weight"),
                                   "attn": {k: lin(f"layers.{l}.self_attn.{k}_proj") for k in "qkvo"},
                                   "mlp": {k: lin(f"layers.{l}.mlp.{k}_proj") for k in ("gate", "up", "down")}}
                                  for l in range(config["num_hidden_layers"])])
    heads = config["num_attention_heads"]
    static = dict(n_head=heads, n_kv_head=config.get("num_key_value_heads") or heads,
                  theta=float(config.get("rope_theta", 10000.0)), eps=float(config.get("rms_norm_eps", 1e-6)))
    return params, static


def embedding(params):  # [d_vocab, d_model]
    return params["embed"]


def unembedding(params):  # [d_vocab, d_model], tied unless the checkpoint stores lm_head apart
    return params.get("unembed", params["embed"])


def final_norm(x, params, eps, lrp=False, **_):  # [n_seq, d] -> [n_seq, d]; numpy or JAX
    return rms_norm(x, params["norm"], eps, lrp)


# ---------------------------------------------------------------- the exporter's PyTorch reference
def torch_modules(model):
    """(blocks, final norm, MLP down-projections) of a transformers LlamaForCausalLM."""
    blocks = model.model.layers
    return blocks, model.model.norm, [b.mlp.down_proj for b in blocks]


# ---------------------------------------------------------------- JAX forward
def rope(x, theta):  # [n_head, n_seq, d_head] -> same, rotated by position (rotate-half convention)
    d_head, n = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / theta ** (jnp.arange(0, d_head, 2, dtype=jnp.float32) / d_head)  # [d_head/2]
    angles = jnp.arange(n, dtype=jnp.float32)[:, None] * inv_freq[None]               # [n_seq, d_head/2]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    cos, sin = jnp.concatenate([cos, cos], -1), jnp.concatenate([sin, sin], -1)         # [n_seq, d_head]
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def gqa(x, q, k, v, o, n_head, n_kv_head, theta, lrp=False):  # [n_seq, d] -> [n_seq, d]
    qh = rope(split_heads(x @ q, n_head), theta)                          # [n_head, n_seq, d_head]
    kh = rope(split_heads(x @ k, n_kv_head), theta)                       # [n_kv_head, n_seq, d_head]
    vh = split_heads(x @ v, n_kv_head)
    group = n_head // n_kv_head                                           # query heads per key/value head
    kh, vh = jnp.repeat(kh, group, axis=0), jnp.repeat(vh, group, axis=0)  # [n_head, n_seq, d_head]
    return multi_head(qh, kh, vh, lrp) @ o                                # [n_seq, d]


def swiglu(x, gate, up, down, lrp=False):  # [n_seq, d] -> [n_seq, d], through [n_seq, d_mlp]
    return product(activation(jax.nn.silu, x @ gate, lrp), x @ up, lrp) @ down


def block(x, p, n_head, n_kv_head, theta, eps, lrp=False):  # [n_seq, d] -> [n_seq, d]
    attn_in = rms_norm(x, p["attn_norm"], eps, lrp)
    x = x + gqa(attn_in, **p["attn"], n_head=n_head, n_kv_head=n_kv_head, theta=theta, lrp=lrp)
    return x + swiglu(rms_norm(x, p["mlp_norm"], eps, lrp), **p["mlp"], lrp=lrp)


def final_hidden(tok_emb, params, n_head, n_kv_head, theta, eps, lrp=False):  # [n_seq, d] -> [n_seq, d] normed
    x = scan_blocks(lambda h, p: block(h, p, n_head, n_kv_head, theta, eps, lrp), tok_emb, params["blocks"])
    return final_norm(x, params, eps, lrp)                                # no position embedding: RoPE
