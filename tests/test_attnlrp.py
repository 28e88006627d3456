"""AttnLRP (Achtibat et al., ICML 2024): lens's JAX rules against the authors' own library, lxt
(PyTorch, run in a subprocess on the same weights), and the conservation the rules imply."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lens
from lens.errors import LensError
from lens.families import gpt2, layers, llama
from lens.grad import Attributor
from references import assert_equal_to_lxt, lxt_relevance


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_relevance_equals_lxt(family, tiny, tiny_llama, tmp_path):
    src, folder = tiny if family == "gpt2" else tiny_llama
    gen = lens.load(folder).generate("William Shakespeare was born in the year", 6, sample=True, seed=3)
    got = Attributor(folder).attribute(gen.token_ids, gen.n_prompt, method="attnlrp")
    want, logits = lxt_relevance(src, gen.token_ids, gen.n_prompt, tmp_path)
    assert_equal_to_lxt(got.signed, want)
    np.testing.assert_allclose(got.target_values, logits, rtol=1e-4, atol=1e-5)
    # scores: the normalised size of each position's relevance, causal
    np.testing.assert_allclose(got.scores, np.abs(want) / np.abs(want).sum(1, keepdims=True), atol=1e-5)
    # the rules change the backward pass, not the model: gradient x input differs
    plain = Attributor(folder).attribute(gen.token_ids, gen.n_prompt, method="grad_x_input")
    assert np.abs(plain.signed - got.signed).max() > 0.1 * np.abs(got.signed).max()


def _relevance_in(f, *xs):
    """sum over inputs of x * (modified) gradient of sum(f(x)): the relevance reaching the inputs when
    the output's relevance is its value."""
    grads = jax.grad(lambda *a: f(*a).sum(), argnums=tuple(range(len(xs))))(*xs)
    return sum(float((x * g).sum()) for x, g in zip(xs, grads))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_norms_activations_and_products_conserve_relevance(rng):
    """Bias-free, every rule but attention's passes on exactly the relevance it receives (the
    identity rule through norms and GELU/SiLU, the uniform rule through a product)."""
    x = jnp.asarray(rng.normal(size=(5, 16)), jnp.float32)
    g = jnp.asarray(rng.normal(size=16), jnp.float32)
    w1, w2, w3 = (jnp.asarray(rng.normal(size=s) / 4, jnp.float32) for s in [(16, 24), (16, 24), (24, 16)])
    cases = {
        "layer_norm": lambda x, lrp: layers.layer_norm(x, g, 0.0, 1e-5, lrp=lrp),
        "rms_norm": lambda x, lrp: layers.rms_norm(x, g, 1e-6, lrp=lrp),
        "gpt2 mlp": lambda x, lrp: gpt2.ffn(x, {"w": w1, "b": 0.0}, {"w": w3, "b": 0.0}, lrp=lrp),
        "swiglu": lambda x, lrp: llama.swiglu(x, w1, w2, w3, lrp=lrp),
    }
    for name, f in cases.items():
        total = float(f(x, True).sum())
        assert _relevance_in(lambda x: f(x, True), x) == pytest.approx(total, rel=1e-4), name
        # plain gradient x input is not conservative here (a norm is scale-invariant: it gives 0)
        assert abs(_relevance_in(lambda x: f(x, False), x) - total) > 0.05 * abs(total), name


def test_uniform_rule_through_attention(rng):
    """softmax(q k^T) v: the values get half of the relevance; the other half goes to the attention
    weights, and with constant scores (q = k = 0) the softmax passes none of it on."""
    q = jnp.zeros((2, 6, 8), jnp.float32)
    v = jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32)
    out = layers.multi_head(q, q, v, lrp=True)
    assert _relevance_in(lambda v: layers.multi_head(q, q, v, lrp=True), v) == \
        pytest.approx(0.5 * float(out.sum()), rel=1e-5)
    # q, k, v all carrying signal: half through v exactly, the rest through q and k a quarter each
    q, k = (jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32) for _ in range(2))
    f = lambda q, k, v: layers.multi_head(q, k, v, lrp=True)
    plain = lambda q, k, v: layers.multi_head(q, k, v)
    dq, dk, dv = jax.grad(lambda *a: f(*a).sum(), argnums=(0, 1, 2))(q, k, v)
    pq, pk, pv = jax.grad(lambda *a: plain(*a).sum(), argnums=(0, 1, 2))(q, k, v)
    np.testing.assert_allclose(dv, pv / 2, rtol=1e-5)
    np.testing.assert_allclose(dq, pq / 4, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dk, pk / 4, rtol=1e-5, atol=1e-7)


def test_rules_leave_the_forward_unchanged(tiny_llama):
    folder = tiny_llama[1]
    a = Attributor(folder)
    x = a.wte[np.arange(100, 110)]
    f = lambda lrp: llama.final_hidden(jnp.asarray(x), a.params, **dict(a.static), lrp=lrp)
    np.testing.assert_array_equal(np.asarray(f(True)), np.asarray(f(False)))


def test_attnlrp_explains_the_logit(tiny):
    with pytest.raises(LensError, match="logit"):
        Attributor(tiny[1]).attribute([1, 2, 3, 4], 2, method="attnlrp", target="probability")
