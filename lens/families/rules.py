"""Backward rules, passed to the forwards as an object: `GRADIENT` (plain autodiff) or `ATTNLRP`.

AttnLRP (Achtibat et al., ICML 2024, as its authors' `lxt` implements it) swaps the gradient of the
non-linear parts for LRP's rules: relevance is then gradient x input of the modified backward, so the
same one-forward, vmapped-VJP engine computes it. The forward values never change.
  norms             the variance is a constant (identity rule): only the centring and scale pass gradient
  GELU, SiLU, tanh  identity rule: the gradient is act(z) / z
  x * y             uniform rule: each factor of a product gets half (a gated MLP's gate * up)
  attention         uniform rule through its two products: softmax(q k^T) v gives v half, q and k a quarter
A method that needs other rules defines another `Rules` subclass; no forward changes.
"""
from __future__ import annotations

import functools

import jax


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


class Rules:
    """Plain gradients: every hook is the identity. Numpy inputs (the logit lens) use this too."""
    name = "gradient"

    def norm_scale(self, t):          # a norm's 1/std (or 1/rms) factor
        return t

    def activation(self, fn, z):      # an element-wise non-linearity
        return fn(z)

    def product(self, a, b):          # a gated product
        return a * b

    def attention_inputs(self, q, k, v):  # before softmax(q k^T) v
        return q, k, v

    def __repr__(self):
        return f"<rules {self.name}>"


class AttnLRP(Rules):
    name = "attnlrp"

    def norm_scale(self, t):
        return jax.lax.stop_gradient(t)

    def activation(self, fn, z):
        return identity_rule(fn, z)

    def product(self, a, b):
        return divide_gradient(a * b, 2)

    def attention_inputs(self, q, k, v):  # two products (q k^T, then the weights times v)
        return divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(v, 2)


GRADIENT, ATTNLRP = Rules(), AttnLRP()
RULES = {r.name: r for r in (GRADIENT, ATTNLRP)}  # what a method's `rules` names
