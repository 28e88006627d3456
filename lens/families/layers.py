"""Layers every family shares, written once. They only use array methods and operators, so the
same function runs on numpy arrays (the logit lens) and inside JAX traces (the attribution ports).

`lrp=True` swaps the gradient of the non-linear parts for AttnLRP's rules (Achtibat et al., ICML
2024, as its authors' `lxt` implements them): relevance is then gradient x input of the modified
backward, so the same one-forward, vmapped-VJP engine computes it. The forward values never change.
  norms             the variance is a constant (identity rule): only the centring and scale pass gradient
  GELU, SiLU        identity rule: the gradient is act(z) / z
  x * y             uniform rule: each factor of a product gets half (SwiGLU's gate * up)
  attention         uniform rule through its two products: softmax(q k^T) v gives v half, q and k a quarter
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


# ---------------------------------------------------------------- AttnLRP's backward rules
@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def divide_gradient(x, factor):  # forward: x; backward: the gradient divided by factor (uniform rule)
    return x


divide_gradient.defvjp(lambda x, factor: (x, None), lambda factor, _, g: (g / factor,))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def identity_rule(fn, z):  # forward: fn(z); backward: the gradient times fn(z) / z (element-wise)
    return fn(z)


def _identity_fwd(fn, z):
    y = fn(z)
    return y, y / (z + 1e-10)  # lxt's epsilon, so both implementations divide alike


identity_rule.defvjp(_identity_fwd, lambda fn, ratio, g: (g * ratio,))


def _constant(t, lrp):  # AttnLRP holds a norm's scale constant; numpy inputs never ask for it
    return jax.lax.stop_gradient(t) if lrp else t


# ---------------------------------------------------------------- layers
def layer_norm(x, g, b, eps, lrp=False):  # [n_seq, d] -> [n_seq, d]
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return g * (x - mean) * _constant((var + eps) ** -0.5, lrp) + b


def rms_norm(x, g, eps, lrp=False):  # [n_seq, d] -> [n_seq, d]
    return g * x * _constant(((x ** 2).mean(-1, keepdims=True) + eps) ** -0.5, lrp)


def activation(fn, z, lrp=False):  # an element-wise non-linearity, under the identity rule for AttnLRP
    return identity_rule(fn, z) if lrp else fn(z)


def product(a, b, lrp=False):  # a * b, each factor getting half the gradient for AttnLRP
    return divide_gradient(a * b, 2) if lrp else a * b


def causal_mask(n, dtype):  # [n_seq, n_seq]: 0 on and below the diagonal, the dtype's minimum above
    return (1 - jnp.tri(n, dtype=dtype)) * jnp.finfo(dtype).min


def attention(q, k, v, mask):  # [n_q, d_k], [n_k, d_k], [n_k, d_v], [n_q, n_k] -> [n_q, d_v]
    return jax.nn.softmax(q @ k.T / jnp.sqrt(q.shape[-1]) + mask, axis=-1) @ v


def multi_head(q, k, v, lrp=False):  # [n_head, n_seq, d_head] x 3 -> [n_seq, n_head * d_head], causal
    if lrp:  # two products (q k^T, then the weights times v): half for v, a quarter for q and k
        q, k, v = divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(v, 2)
    n = q.shape[1]
    out = jax.vmap(attention, in_axes=(0, 0, 0, None))(q, k, v, causal_mask(n, q.dtype))
    return out.transpose(1, 0, 2).reshape(n, -1)


def split_heads(t, n_head):  # [n_seq, n_head * d_head] -> [n_head, n_seq, d_head]
    return t.reshape(t.shape[0], n_head, -1).transpose(1, 0, 2)


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


def scan_blocks(block, x, blocks):  # run `block(x, params_of_layer)` over the stacked layers
    x, _ = jax.lax.scan(lambda h, p: (block(h, p), None), x, blocks)
    return x
