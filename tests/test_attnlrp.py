"""AttnLRP (Achtibat et al., ICML 2024): lens's JAX rules against the authors' own library, lxt
(PyTorch, run in a subprocess on the same weights), and the conservation the rules imply."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lens
from lens.errors import LensError
from lens.families import decoder, layers
from lens.families.decoder import Arch
from lens.families.rules import ATTNLRP, GRADIENT
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
    gelu = Arch("toy", 1, 16, 1, 1, 16, 24, 8, 8, act="gelu_new")
    silu = Arch("toy", 1, 16, 1, 1, 16, 24, 8, 8, act="silu")
    cases = {
        "layer_norm": lambda x, r: layers.layer_norm(x, g, None, 1e-5, rules=r),
        "rms_norm": lambda x, r: layers.rms_norm(x, g, None, 1e-6, rules=r),
        "gemma's 1 + w norm": lambda x, r: layers.rms_norm(x, g, None, 1e-6, offset=1.0, rules=r),
        "gpt2 mlp": lambda x, r: decoder.mlp(x, {"W_in": w1, "W_out": w3}, gelu, r),
        "swiglu": lambda x, r: decoder.mlp(x, {"W_gate": w1, "W_in": w2, "W_out": w3}, silu, r),
    }
    for name, f in cases.items():
        total = float(f(x, ATTNLRP).sum())
        assert _relevance_in(lambda x: f(x, ATTNLRP), x) == pytest.approx(total, rel=1e-4), name
        # plain gradient x input is not conservative here (a norm is scale-invariant: it gives 0)
        assert abs(_relevance_in(lambda x: f(x, GRADIENT), x) - total) > 0.05 * abs(total), name


def test_uniform_rule_through_attention(rng):
    """softmax(q k^T) v: the values get half of the relevance; the other half goes to the attention
    weights, and with constant scores (q = k = 0) the softmax passes none of it on."""
    q = jnp.zeros((2, 6, 8), jnp.float32)
    v = jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32)
    attend = lambda q, k, v, rules=ATTNLRP: layers.attention(q, k, v, 8 ** -0.5, 0, rules=rules)
    out = attend(q, q, v)
    assert _relevance_in(lambda v: attend(q, q, v), v) == pytest.approx(0.5 * float(out.sum()), rel=1e-5)
    # q, k, v all carrying signal: half through v exactly, the rest through q and k a quarter each
    q, k = (jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32) for _ in range(2))
    f = attend
    plain = lambda q, k, v: attend(q, k, v, GRADIENT)
    dq, dk, dv = jax.grad(lambda *a: f(*a).sum(), argnums=(0, 1, 2))(q, k, v)
    pq, pk, pv = jax.grad(lambda *a: plain(*a).sum(), argnums=(0, 1, 2))(q, k, v)
    np.testing.assert_allclose(dv, pv / 2, rtol=1e-5)
    np.testing.assert_allclose(dq, pq / 4, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dk, pk / 4, rtol=1e-5, atol=1e-7)


def test_rules_leave_the_forward_unchanged(tiny_llama):
    folder = tiny_llama[1]
    a = Attributor(folder)
    x = a.wte[np.arange(100, 110)]
    f = lambda rules: decoder.final_hidden(jnp.asarray(x), a.params, a.arch, rules)
    np.testing.assert_array_equal(np.asarray(f(ATTNLRP)), np.asarray(f(GRADIENT)))


def test_attnlrp_explains_the_logit(tiny):
    with pytest.raises(LensError, match="logit"):
        Attributor(tiny[1]).attribute([1, 2, 3, 4], 2, method="attnlrp", target="probability")
