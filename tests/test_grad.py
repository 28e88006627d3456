"""Attribution engine against PyTorch autograd on the same weights and the same sequence.

The reference is a per-token loop (one forward and backward per generated token, as Ecco and
Captum do), written here independently of lens's JAX port."""
from __future__ import annotations

import numpy as np
import pytest

from lens.grad import Attributor
from lens.grad.engine import _compiled, jax_precision
from references import torch_reference


@pytest.fixture(scope="module")
def tiny_attr(tiny):
    return Attributor(tiny[1])


@pytest.fixture(scope="module")
def tiny_seqs(tiny_model):
    greedy = tiny_model.generate("William Shakespeare was born in the year", 9)
    sampled = tiny_model.generate("1, 2, 3, 4,", 7, sample=True, seed=2, top_k=40)
    return {"greedy": greedy, "sampled": sampled}


@pytest.mark.parametrize("kind", ["greedy", "sampled"])
@pytest.mark.parametrize("method,target", [("grad_x_input", "logit"), ("gradient", "logit"),
                                           ("grad_x_input", "probability"), ("contrastive", "logit")])
def test_methods_match_pytorch_autograd(tiny_attr, tiny_torch, tiny_seqs, kind, method, target):
    g = tiny_seqs[kind]
    foil = 1315 if method == "contrastive" else None
    got = tiny_attr.attribute(g.token_ids, g.n_prompt, method=method, target=target, foils=foil)
    want, signed, values = torch_reference(tiny_torch, g.token_ids, g.n_prompt,
                                           "gradient" if method == "gradient" else "grad_x_input", target, foil)
    np.testing.assert_allclose(got.scores, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.target_values, values, rtol=1e-4, atol=1e-6)
    if method != "gradient":
        np.testing.assert_allclose(got.signed, signed, rtol=1e-3, atol=1e-5 * np.abs(signed).max())


def test_integrated_gradients_match_pytorch_and_are_complete(tiny_attr, tiny_torch, tiny_seqs):
    g = tiny_seqs["greedy"]
    got = tiny_attr.attribute(g.token_ids, g.n_prompt, method="integrated_gradients", steps=64, baseline="zero")
    base = tiny_attr.baseline(tiny_attr.wte[g.token_ids], "zero", keep_first=True)
    want, signed, _ = torch_reference(tiny_torch, g.token_ids, g.n_prompt, "integrated_gradients", steps=64,
                                      baseline=base)
    np.testing.assert_allclose(got.scores, want, atol=1e-5, rtol=0)
    assert got.completeness_error().max() < 0.01
    assert np.all(got.signed[:, 0] == 0)  # the first position keeps its embedding: nothing to attribute
    # the baseline value is the score with all-zero token embeddings but the first (position embeddings kept)
    import torch
    with torch.no_grad():
        pos = g.n_prompt
        zero = torch.zeros(pos, tiny_torch.config.n_embd)
        zero[0] = torch.tensor(tiny_attr.wte[g.token_ids[0]])
        want0 = float(tiny_torch(inputs_embeds=zero[None]).logits[0, -1, int(g.token_ids[pos])])
    assert got.baseline_values[0] == pytest.approx(want0, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("baseline", ["mean", 220])
def test_integrated_gradients_from_a_token_or_the_mean(tiny_attr, tiny_torch, tiny_seqs, baseline):
    """A baseline of one embedding everywhere (the vocabulary's mean, or a token's: 220 is " "), on the
    uniform path; equal to autograd along the same path, and complete."""
    g = tiny_seqs["greedy"]
    got = tiny_attr.attribute(g.token_ids, g.n_prompt, method="integrated_gradients", steps=16, baseline=baseline)
    x = tiny_attr.wte[g.token_ids]
    base = tiny_attr.baseline(x, baseline, keep_first=True)
    vector = tiny_attr.wte.mean(0) if baseline == "mean" else tiny_attr.wte[220]
    np.testing.assert_array_equal(base[1:], np.broadcast_to(vector, base[1:].shape))
    np.testing.assert_array_equal(base[0], x[0])
    want, signed, _ = torch_reference(tiny_torch, g.token_ids, g.n_prompt, "integrated_gradients", steps=16,
                                      baseline=base, power=1)
    np.testing.assert_allclose(got.scores, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.signed, signed, rtol=1e-3, atol=1e-5 * np.abs(signed).max())
    assert got.completeness_error().max() < 0.01


def test_rows_are_causal_and_normalised(tiny_attr, tiny_seqs):
    g = tiny_seqs["greedy"]
    a = tiny_attr.attribute(g.token_ids, g.n_prompt)
    n_gen, n = a.scores.shape
    assert (n_gen, n) == (len(g.token_ids) - g.n_prompt, len(g.token_ids))
    for t in range(n_gen):
        assert np.all(a.scores[t, g.n_prompt + t:] == 0) and np.all(a.signed[t, g.n_prompt + t:] == 0)
        assert np.all(a.scores[t, :g.n_prompt + t] > 0)
    np.testing.assert_allclose(a.scores.sum(1), 1, rtol=1e-6)


def test_chunking_and_padding_change_nothing(tiny_attr, tiny_seqs):

    g = tiny_seqs["sampled"]
    whole = tiny_attr.attribute(g.token_ids, g.n_prompt)
    for rows in (1, 3):
        np.testing.assert_allclose(tiny_attr.attribute(g.token_ids, g.n_prompt, rows_per_chunk=rows).scores,
                                   whole.scores, atol=1e-6)
    # the compiled function on the exact, unpadded length and row count
    ids, n_p = g.token_ids, g.n_prompt
    n_gen = len(ids) - n_p
    grad_fn, _ = _compiled(tiny_attr.arch, "logit", False)
    x = tiny_attr.wte[ids]
    _, grads = grad_fn(tiny_attr.params, x, np.zeros_like(x), np.arange(n_p - 1, len(ids) - 1),
                       ids[n_p:], np.zeros(n_gen, np.int64), np.ones(1, np.float32), np.ones(1, np.float32))
    s = np.linalg.norm(np.asarray(grads) * x[None], axis=-1)
    np.testing.assert_allclose(whole.scores, s / s.sum(1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("window,softcap", [(0, None), (5, None), (0, 3.0), (6, 2.0)])
def test_attention_in_query_blocks_is_the_same_function(window, softcap):
    """Blocks of queries (each recomputed in the backward pass) give the same values and gradients,
    windows and soft-capping included, whatever the block size, a ragged last block too."""
    import jax
    import jax.numpy as jnp

    from lens.families.layers import attention

    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(3, 29, 8)), jnp.float32) for _ in range(3))
    w = jnp.asarray(rng.normal(size=(29, 24)), jnp.float32)

    def f(q, k, v, block):
        return (attention(q, k, v, 0.35, window, softcap, query_block=block) * w).sum()

    want, want_grads = jax.value_and_grad(f, argnums=(0, 1, 2))(q, k, v, 0)
    for block in (1, 7, 16, 28):
        got, grads = jax.value_and_grad(f, argnums=(0, 1, 2))(q, k, v, block)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        for g, h in zip(grads, want_grads):
            np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_recomputed_layers_give_the_same_gradients(tiny, tiny_llama, tiny_seqs, family):
    """The long-sequence plan (each layer recomputed, attention in query blocks) changes no number."""
    from lens.families.decoder import Memory
    from lens.families.rules import ATTNLRP, GRADIENT

    a = Attributor((tiny if family == "gpt2" else tiny_llama)[1])
    ids = np.random.default_rng(3).integers(0, 50000, 37)
    x, n_p = a.wte[ids], 30
    args = (a.params, x, np.zeros_like(x), np.arange(n_p - 1, len(ids) - 1), ids[n_p:],
            np.zeros(len(ids) - n_p, np.int64), np.ones(1, np.float32), np.ones(1, np.float32))
    for rules in (GRADIENT, ATTNLRP):
        with jax_precision():
            want = _compiled(a.arch, "logit", False, rules)[0](*args)
            got = _compiled(a.arch, "logit", False, rules, mem=Memory(remat_layers=True, query_block=8))[0](*args)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
        # float32 sums in another order: equal to 1e-5 of the largest gradient
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-5 * np.abs(want[1]).max())


def test_the_memory_plan_on_smollm2_shapes():
    """SmolLM2's shape (30 layers, 576 wide, 1536 neurons, 9 heads) under the default 4 GiB: everything
    kept for short prompts; past ~1,000 tokens layers recomputed and attention in blocks, so 8,000
    tokens fit; a budget nothing fits is one clean error."""
    import lens
    from lens.grad.engine import KEEP_ALL, QUERY_BLOCK, memory_plan

    shape = (30, 576, 1536, 9)
    assert memory_plan(4 << 30, *shape, 100) == (8, KEEP_ALL)
    rows, mem = memory_plan(4 << 30, *shape, 2000)
    assert mem.remat_layers and mem.query_block == QUERY_BLOCK and rows >= 4
    rows, mem = memory_plan(4 << 30, *shape, 8192)
    assert mem.remat_layers and rows >= 1
    with pytest.raises(lens.LensError, match="attributing 8192 tokens needs about .* GiB, more than the gradient"):
        memory_plan(512 << 20, *shape, 8192)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_batches_of_sequences_equal_one_at_a_time(tiny, tiny_llama, tiny_torch, family):
    """attribute_batch (several sequences per vmapped call: corpus mode) equals attribute on each
    sequence, and PyTorch autograd on one of them."""
    a = Attributor((tiny if family == "gpt2" else tiny_llama)[1])
    rng = np.random.default_rng(1)
    seqs = [(rng.integers(0, 50000, n + g), int(n)) for n, g in [(3, 1), (12, 4), (7, 2), (20, 3), (5, 4), (9, 1)]]
    for method in ("grad_x_input", "gradient", "attnlrp", "integrated_gradients"):
        base = 220 if method == "integrated_gradients" else None
        got = a.attribute_batch(seqs, method=method, baseline=base, batch_rows=8)
        for (ids, n), r in zip(seqs, got):
            ref = a.attribute(ids, n, method=method, baseline=base)
            np.testing.assert_allclose(r.scores, ref.scores, atol=1e-6, err_msg=method)
            np.testing.assert_allclose(r.target_values, ref.target_values, rtol=1e-5, atol=1e-6)
            if ref.signed is not None:
                np.testing.assert_allclose(r.signed, ref.signed, rtol=1e-4, atol=1e-5 * np.abs(ref.signed).max())
            if ref.baseline_values is not None:
                np.testing.assert_allclose(r.baseline_values, ref.baseline_values, rtol=1e-5, atol=1e-6)
    if family == "gpt2":
        ids, n = seqs[3]
        want, _, _ = torch_reference(tiny_torch, ids, n, "grad_x_input", "logit", None)
        np.testing.assert_allclose(a.attribute_batch(seqs)[3].scores, want, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_exported_weights_are_read_in_place(tiny, tiny_llama, family):
    """An export lays each per-layer tensor's layers back to back, 64-byte aligned: the JAX port's
    stacked weights are read-only views of the mapped file, JAX on a CPU uses them without a copy,
    and they hold the checkpoint's values."""
    import jax
    from safetensors.numpy import load_file

    from lens import families
    from lens.grad.engine import in_place
    from lens.store import ModelFolder

    src, exported = tiny if family == "gpt2" else tiny_llama
    folder = ModelFolder(exported)
    _, params = families.load(folder.config, folder.weights())
    blocks = params["blocks"]
    weights = {k: v for k, v in blocks.items() if k not in ("scale", "window", "inv_freq", "rope_factor")}
    distinct = [leaf for leaf in jax.tree_util.tree_leaves(weights) if not np.array_equal(leaf[0], leaf[1])]
    assert len(distinct) == (4 if family == "gpt2" else 7)  # every weight matrix (norms start at 1, biases at 0)
    for leaf in distinct:  # (layers with equal bytes, such as zero biases, share one initializer: copied)
        assert not leaf.flags.owndata and not leaf.flags.writeable and leaf.ctypes.data % 64 == 0
    assert in_place(distinct, jax.device_put(distinct))
    ckpt = load_file(str(src / "model.safetensors"))
    layers = range(2)
    if family == "gpt2":
        pairs = [(blocks["attn"]["W_QKV"], [ckpt[f"transformer.h.{l}.attn.c_attn.weight"] for l in layers]),
                 (blocks["mlp"]["b_out"], [ckpt[f"transformer.h.{l}.mlp.c_proj.bias"] for l in layers]),
                 (blocks["ln2"]["w"], [ckpt[f"transformer.h.{l}.ln_2.weight"] for l in layers])]
    else:
        pairs = [(blocks["attn"]["W_Q"], [ckpt[f"model.layers.{l}.self_attn.q_proj.weight"].T for l in layers]),
                 (blocks["mlp"]["W_out"], [ckpt[f"model.layers.{l}.mlp.down_proj.weight"].T for l in layers]),
                 (blocks["ln2"]["w"], [ckpt[f"model.layers.{l}.post_attention_layernorm.weight"] for l in layers])]
    for stacked, per_layer in pairs:
        np.testing.assert_array_equal(stacked, np.stack(per_layer))


def test_layers_are_joined_only_when_adjacent_in_one_buffer():
    from lens.families.layers import stack_layers

    buf = np.arange(24, dtype=np.float32)
    views = [buf[0:6].reshape(2, 3), buf[6:12].reshape(2, 3), buf[12:18].reshape(2, 3)]
    joined = stack_layers(*views)
    assert np.shares_memory(joined, buf) and not joined.flags.writeable
    np.testing.assert_array_equal(joined, np.stack(views))
    for layers in ([views[0], views[2]], [views[1], views[0]],        # a gap, out of order
                   [np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)]):  # separate arrays
        got = stack_layers(*layers)
        assert not np.shares_memory(got, buf) and got.flags.owndata
        np.testing.assert_array_equal(got, np.stack(layers))


def test_jax_forward_matches_onnx_graph(tiny_attr, tiny_model, tiny_seqs):
    from lens.families import decoder

    ids = tiny_seqs["greedy"].token_ids
    trace = tiny_model.run(ids)
    x = tiny_attr.wte[ids]
    hidden = np.asarray(decoder.final_hidden(x, tiny_attr.params, tiny_attr.arch))
    np.testing.assert_allclose(hidden, trace.ln_final, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(decoder.logits(hidden, tiny_attr.params, tiny_attr.arch)), trace.logits,
                               atol=1e-4, rtol=0)


def test_bad_arguments(tiny_attr, tiny_seqs):
    from lens.errors import LensError

    g = tiny_seqs["greedy"]
    with pytest.raises(LensError, match="unknown attribution method"):
        tiny_attr.attribute(g.token_ids, g.n_prompt, method="lime")
    with pytest.raises(LensError, match="needs a foil"):
        tiny_attr.attribute(g.token_ids, g.n_prompt, method="contrastive")
    with pytest.raises(LensError, match="one foil token id per generated token"):
        tiny_attr.attribute(g.token_ids, g.n_prompt, method="contrastive", foils=[1, 2])
    with pytest.raises(LensError, match=r"baseline has shape \(3, 64\)"):
        tiny_attr.attribute(g.token_ids, g.n_prompt, method="integrated_gradients", baseline=np.zeros((3, 64)))


@pytest.mark.slow
@pytest.mark.parametrize("sample", [False, True])
def test_distilgpt2_shape_matches_pytorch(distil, distil_model, distil_torch, sample):
    g = distil_model.generate("William Shakespeare was born in the year", 6, sample=sample, seed=1)
    got = Attributor(distil[1]).attribute(g.token_ids, g.n_prompt)
    want, _, _ = torch_reference(distil_torch, g.token_ids, g.n_prompt)
    np.testing.assert_allclose(got.scores, want, atol=1e-5, rtol=0)
