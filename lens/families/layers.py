"""Layers every family shares, written once. They only use array methods and operators, so the
same function runs on numpy arrays (the logit lens) and inside JAX traces (the attribution ports)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def layer_norm(x, g, b, eps):  # [n_seq, d] -> [n_seq, d]
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return g * (x - mean) * (var + eps) ** -0.5 + b


def rms_norm(x, g, eps):  # [n_seq, d] -> [n_seq, d]
    return g * x * ((x ** 2).mean(-1, keepdims=True) + eps) ** -0.5


def causal_mask(n, dtype):  # [n_seq, n_seq]: 0 on and below the diagonal, the dtype's minimum above
    return (1 - jnp.tri(n, dtype=dtype)) * jnp.finfo(dtype).min


def attention(q, k, v, mask):  # [n_q, d_k], [n_k, d_k], [n_k, d_v], [n_q, n_k] -> [n_q, d_v]
    return jax.nn.softmax(q @ k.T / jnp.sqrt(q.shape[-1]) + mask, axis=-1) @ v


def multi_head(q, k, v):  # [n_head, n_seq, d_head] x 3 -> [n_seq, n_head * d_head], causal
    n = q.shape[1]
    out = jax.vmap(attention, in_axes=(0, 0, 0, None))(q, k, v, causal_mask(n, q.dtype))
    return out.transpose(1, 0, 2).reshape(n, -1)


def split_heads(t, n_head):  # [n_seq, n_head * d_head] -> [n_head, n_seq, d_head]
    return t.reshape(t.shape[0], n_head, -1).transpose(1, 0, 2)


def stack(blocks: list[dict]) -> dict:
    """Per-layer parameter dicts -> one dict of arrays with a leading layer axis (for lax.scan)."""
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *blocks)


def scan_blocks(block, x, blocks):  # run `block(x, params_of_layer)` over the stacked layers
    x, _ = jax.lax.scan(lambda h, p: (block(h, p), None), x, blocks)
    return x
