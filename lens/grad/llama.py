"""Llama's forward pass in JAX, in the same pure-function style as `gpt2.py`: RMSNorm, rotary
position embeddings, grouped-query attention and a SwiGLU MLP, blocks scanned along a layer axis."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import LensError
from .gpt2 import attention


def rms_norm(x, g, eps):  # [n_seq, d] -> [n_seq, d]
    return g * x / jnp.sqrt(jnp.mean(x ** 2, axis=-1, keepdims=True) + eps)


def rope(x, theta):  # [n_head, n_seq, d_head] -> same, rotated by position (rotate-half convention)
    d_head, n = x.shape[-1], x.shape[-2]
    inv_freq = 1.0 / theta ** (jnp.arange(0, d_head, 2, dtype=jnp.float32) / d_head)  # [d_head/2]
    angles = jnp.arange(n, dtype=jnp.float32)[:, None] * inv_freq[None]               # [n_seq, d_head/2]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    cos, sin = jnp.concatenate([cos, cos], -1), jnp.concatenate([sin, sin], -1)         # [n_seq, d_head]
    x1, x2 = jnp.split(x, 2, axis=-1)
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def gqa(x, q, k, v, o, n_head, n_kv_head, theta):  # [n_seq, d] -> [n_seq, d]
    n = x.shape[0]
    heads = lambda t, h: t.reshape(n, h, -1).transpose(1, 0, 2)          # [h, n_seq, d_head]
    qh = rope(heads(x @ q, n_head), theta)                                # [n_head, n_seq, d_head]
    kh = rope(heads(x @ k, n_kv_head), theta)                             # [n_kv_head, n_seq, d_head]
    vh = heads(x @ v, n_kv_head)
    group = n_head // n_kv_head                                           # query heads per key/value head
    kh, vh = jnp.repeat(kh, group, axis=0), jnp.repeat(vh, group, axis=0)  # [n_head, n_seq, d_head]
    mask = (1 - jnp.tri(n, dtype=x.dtype)) * jnp.finfo(x.dtype).min      # causal, [n_seq, n_seq]
    out = jax.vmap(attention, in_axes=(0, 0, 0, None))(qh, kh, vh, mask)  # [n_head, n_seq, d_head]
    return out.transpose(1, 0, 2).reshape(n, -1) @ o                      # [n_seq, d]


def swiglu(x, gate, up, down):  # [n_seq, d] -> [n_seq, d], through [n_seq, d_mlp]
    return (jax.nn.silu(x @ gate) * (x @ up)) @ down


def block(x, p, n_head, n_kv_head, theta, eps):  # [n_seq, d] -> [n_seq, d]
    x = x + gqa(rms_norm(x, p["attn_norm"], eps), **p["attn"], n_head=n_head, n_kv_head=n_kv_head, theta=theta)
    return x + swiglu(rms_norm(x, p["mlp_norm"], eps), **p["mlp"])


def final_hidden(tok_emb, params, n_head, n_kv_head, theta, eps):  # [n_seq, d] -> [n_seq, d] after the norm
    step = lambda h, p: (block(h, p, n_head, n_kv_head, theta, eps), None)
    x, _ = jax.lax.scan(step, tok_emb, params["blocks"])                  # no position embedding: RoPE
    return rms_norm(x, params["norm"], eps)


def unembedding(params):  # [d_vocab, d_model]
    return params["unembed"] if "unembed" in params else params["embed"]


def embedding(weights: dict) -> np.ndarray:
    return weights["model.embed_tokens.weight"]


def load_params(weights: dict[str, np.ndarray], config: dict) -> tuple[dict, dict]:
    """Nested params (Linear weights transposed to [in, out]) and the static settings."""
    scaling = config.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
        raise LensError(f"rope scaling {scaling!r} is not supported by lens's JAX port")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise LensError("Llama models with attention or MLP biases are not supported by lens's JAX port")
    t = lambda name: weights[f"model.{name}"]
    lin = lambda name: np.ascontiguousarray(t(f"{name}.weight").T)
    blocks = [{"attn_norm": t(f"layers.{l}.input_layernorm.weight"),
               "mlp_norm": t(f"layers.{l}.post_attention_layernorm.weight"),
               "attn": {k: lin(f"layers.{l}.self_attn.{k}_proj") for k in "qkvo"},
               "mlp": {k: lin(f"layers.{l}.mlp.{k}_proj") for k in ("gate", "up", "down")}}
              for l in range(config["num_hidden_layers"])]
    params = {"embed": t("embed_tokens.weight"), "norm": t("norm.weight"),
              "blocks": jax.tree_util.tree_map(lambda *xs: np.stack(xs), *blocks)}
    if "lm_head.weight" in weights:  # untied output embedding
        params["unembed"] = weights["lm_head.weight"]
    heads = config["num_attention_heads"]
    static = dict(n_head=heads, n_kv_head=config.get("num_key_value_heads") or heads,
                  theta=float(config.get("rope_theta", 10000.0)), eps=float(config.get("rms_norm_eps", 1e-6)))
    return params, static
