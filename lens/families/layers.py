"""Layers every family shares, written once. They use only array methods and operators, so the same
function runs on numpy arrays (the logit lens) and inside JAX traces (the attribution ports). The
backward rules (plain gradient or AttnLRP) come in as a `rules.Rules` object."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .rules import GRADIENT, Rules


# ---------------------------------------------------------------- norms
def layer_norm(x, w, b=None, eps=1e-5, offset=0.0, rules: Rules = GRADIENT):  # [..., d] -> [..., d]
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    y = (x - mean) * rules.norm_scale((var + eps) ** -0.5) * (w + offset)
    return y if b is None else y + b


def rms_norm(x, w, b=None, eps=1e-6, offset=0.0, rules: Rules = GRADIENT):  # [..., d] -> [..., d]
    y = x * rules.norm_scale(((x ** 2).mean(-1, keepdims=True) + eps) ** -0.5) * (w + offset)
    return y if b is None else y + b


NORMS = {"layernorm": layer_norm, "rmsnorm": rms_norm}


# ---------------------------------------------------------------- activations (transformers' ACT2FN names)
def gelu_tanh(x):  # GPT-2's "gelu_new", Gemma's "gelu_pytorch_tanh"
    return 0.5 * x * (1 + jnp.tanh(jnp.sqrt(2 / jnp.pi) * (x + 0.044715 * x ** 3)))


ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1 + jax.scipy.special.erf(x / math.sqrt(2))),  # exact, erf
    "gelu_python": lambda x: 0.5 * x * (1 + jax.scipy.special.erf(x / math.sqrt(2))),
    "gelu_new": gelu_tanh, "gelu_pytorch_tanh": gelu_tanh, "gelu_fast": gelu_tanh,
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "relu": jax.nn.relu, "silu": jax.nn.silu, "swish": jax.nn.silu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid,
}


def soft_cap(x, cap, rules: Rules = GRADIENT):  # cap * tanh(x / cap): Gemma 2's logit soft-capping
    return x if cap is None else rules.activation(lambda z: jnp.tanh(z / cap) * cap, x)


# ---------------------------------------------------------------- attention
def rotate(x, cos, sin, style: str):  # [..., n_seq, r] rotated by position; cos, sin [n_seq, r / 2]
    if style == "interleaved":  # GPT-J: pairs (x0, x1), (x2, x3), ...
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).reshape(x.shape)
    x1, x2 = jnp.split(x, 2, axis=-1)  # Llama, GPT-NeoX: halves
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def rope(x, inv_freq, style: str, factor: float = 1.0):  # [n_head, n_seq, d_head], rotary dims first
    r = 2 * inv_freq.shape[-1]
    angles = jnp.arange(x.shape[-2], dtype=jnp.float32)[:, None] * inv_freq[None]  # [n_seq, r / 2]
    cos, sin = jnp.cos(angles) * factor, jnp.sin(angles) * factor
    rotated = rotate(x[..., :r], cos, sin, style)
    return rotated if r == x.shape[-1] else jnp.concatenate([rotated, x[..., r:]], -1)


def attention_mask(n, window, start=0, rows=None):
    """[rows, n] True where query start+i may read key k (window 0: unlimited); rows default n."""
    q, k = start + jnp.arange(n if rows is None else rows)[:, None], jnp.arange(n)[None]
    return (k <= q) & ((window == 0) | (q - k < window))


def attention(q, k, v, scale, window, softcap=None, rules: Rules = GRADIENT, query_block: int = 0):
    """[n_head, n_seq, d_head] x 3 -> [n_seq, n_head * d_head]: causal (and windowed) softmax attention.

    `query_block` > 0 computes it for that many queries at a time, each block recomputed in the
    backward pass: a gradient then keeps [n_head, block, n_seq] maps instead of [n_head, n_seq, n_seq]
    (2.3 GB a layer for SmolLM2 at 8,000 tokens). Same values either way."""
    q, k, v = rules.attention_inputs(q, k, v)
    n_head, n, d_head = q.shape

    def rows(qb, start):  # [H, b, dh] queries from position `start` -> [H, b, dh]
        return probabilities(qb, k, scale, window, softcap, rules, start) @ v

    if not query_block or n <= query_block:
        out = rows(q, 0)                                                        # [H, n, dh]
    else:
        blocks = -(-n // query_block)
        qs = jnp.pad(q, ((0, 0), (0, blocks * query_block - n), (0, 0)))      # padded queries: dropped below
        qs = qs.reshape(n_head, blocks, query_block, d_head).transpose(1, 0, 2, 3)  # [B, H, b, dh]
        out = jax.lax.map(jax.checkpoint(lambda a: rows(*a)), (qs, jnp.arange(blocks) * query_block))
        out = out.transpose(1, 0, 2, 3).reshape(n_head, blocks * query_block, d_head)[:, :n]
    return out.transpose(1, 0, 2).reshape(n, -1)


def probabilities(q, k, scale, window, softcap=None, rules: Rules = GRADIENT, start: int = 0):
    """[H, b, dh] queries from position `start`, [H, n, dh] keys -> [H, b, n] attention probabilities
    (causal, windowed, soft-capped scores)."""
    n = k.shape[1]
    scores = soft_cap(jnp.einsum("hqd,hkd->hqk", q, k) * scale, softcap, rules)    # [H, b, n]
    scores = jnp.where(attention_mask(n, window, start, q.shape[1]), scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=-1)


def split_heads(t, n_head):  # [n_seq, n_head * d_head] -> [n_head, n_seq, d_head]
    return t.reshape(t.shape[0], n_head, -1).transpose(1, 0, 2)


# ---------------------------------------------------------------- stacked layers
def stack(blocks: list[dict]) -> dict:
    """Per-layer parameter dicts -> one dict of arrays with a leading layer axis (for lax.scan)."""
    return jax.tree_util.tree_map(stack_layers, *blocks)


def stack_layers(*xs: np.ndarray) -> np.ndarray:
    """[n_layers, ...] of same-shaped layers: a read-only view where they lie back to back in one
    buffer (an exported model's file is laid out so: `lens.export.weights`), else a copy."""
    a = xs[0]
    adjacent = all(x.flags.c_contiguous and x.shape == a.shape and x.dtype == a.dtype and _root(x) is _root(a)
                   and x.ctypes.data == a.ctypes.data + i * a.nbytes for i, x in enumerate(xs))
    if adjacent and _root(a) is not a:
        return np.lib.stride_tricks.as_strided(a, (len(xs), *a.shape), (a.nbytes, *a.strides), writeable=False)
    return np.stack(xs)


def _root(x):
    """The object that owns an array's memory (a view's bases walked up): views of one owner only
    may be joined into one view, which keeps the first one, and through it the owner, alive."""
    while isinstance(x, np.ndarray) and x.base is not None:
        x = x.base
    return x.obj if isinstance(x, memoryview) else x  # np.frombuffer: a memoryview of the mapping each time
