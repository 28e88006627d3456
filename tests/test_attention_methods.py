"""Attention rollout and attention flow (Abnar & Zuidema, ACL 2020) as attribution methods: defined
exactly as the paper does, checked against a direct matrix product and against networkx's max-flow
on every (output, input) pair, on PyTorch's own attention probabilities."""
from __future__ import annotations

import numpy as np
import pytest

import lens
from lens.methods import AttentionFlow, AttentionRollout, residual_attention

PROMPT = "William Shakespeare was born in the year"


def _torch_attention(src, ids) -> np.ndarray:
    """[L, n, n] each layer's attention probabilities averaged over heads, by transformers (eager)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager", dtype="float32").eval()
    with torch.no_grad():
        out = model(torch.as_tensor(np.asarray(ids))[None], output_attentions=True)
    return np.stack([a[0].mean(0).numpy() for a in out.attentions]).astype(np.float64)


def _networkx_flow(att: np.ndarray, n_prompt: int) -> np.ndarray:
    """The paper's definition with networkx's Edmonds-Karp (the authors' code), one flow per pair."""
    import networkx as nx

    a = 0.5 * att + 0.5 * np.eye(att.shape[-1])
    n_layers, n, _ = a.shape
    out = np.zeros((n - n_prompt, n))
    for t in range(n_prompt, n):
        q, g = t - 1, nx.DiGraph()
        for l in range(1, n_layers + 1):
            for i in range(q + 1):
                for j in range(i + 1):
                    g.add_edge((l, i), (l - 1, j), capacity=a[l - 1, i, j])
        row = [nx.maximum_flow_value(g, (n_layers, q), (0, k), flow_func=nx.algorithms.flow.edmonds_karp)
               for k in range(q + 1)]
        out[t - n_prompt, :t] = np.asarray(row) / sum(row)
    return out


@pytest.fixture(scope="module", params=["tiny", "tiny_llama"])
def run(request):
    src, folder = request.getfixturevalue(request.param)
    explainer = lens.Explainer.load(folder)
    expl = explainer.explain(PROMPT, max_new_tokens=5, methods=("attention_rollout", "attention_flow", "grad_x_input"))
    return src, explainer, expl, _torch_attention(src, expl.token_ids)


def test_rollout_is_the_product_of_residual_attention(run):
    _, _, expl, att = run
    a = 0.5 * att + 0.5 * np.eye(att.shape[-1])
    rolled = np.linalg.multi_dot(a[::-1])                                     # A_L @ ... @ A_1
    n = expl.n_prompt
    want = np.tril(rolled)[n - 1:-1]
    np.testing.assert_allclose(expl.attributions["attention_rollout"], want / want.sum(1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(np.asarray(expl.attributions["attention_rollout"]).sum(1), 1, atol=1e-5)
    assert "attention_rollout" not in expl.signed    # no signed sum: nothing is differentiated


def test_flow_equals_networkx_on_every_pair(run):
    _, _, expl, att = run
    want = _networkx_flow(att, expl.n_prompt)
    np.testing.assert_allclose(expl.attributions["attention_flow"], want, atol=1e-5)
    # on the same attention the integer max-flow is exact to its capacity rounding (2^-30)
    np.testing.assert_allclose(AttentionFlow().score_attention(att, expl.n_prompt), want, atol=1e-6)


def test_rollout_and_flow_of_a_hand_made_graph():
    """Two layers, worked by hand: rollout mixes, flow is bounded by the narrowest edge. The sequence
    is 3 tokens, the third generated: its row is position 1's."""
    att = np.zeros((2, 3, 3))
    att[:, 2, 2] = 1.0
    att[:, :2, :2] = [[[1.0, 0.0], [0.2, 0.8]], [[1.0, 0.0], [0.6, 0.4]]]
    a = residual_attention(att)                                   # position 1: [0.1, 0.9] in layer 1, [0.3, 0.7] in 2
    np.testing.assert_allclose(a[:, 1, :2], [[0.1, 0.9], [0.3, 0.7]])
    # rollout, row 1 of A_2 @ A_1: [0.3 * 1 + 0.7 * 0.1, 0.7 * 0.9]
    np.testing.assert_allclose(AttentionRollout().score_attention(att, 2)[0], [0.37, 0.63, 0.0])
    # flow from (2, 1) to (0, 0): 1 -> 0 -> 0 carries min(0.3, 1) and 1 -> 1 -> 0 min(0.7, 0.1): 0.4;
    # to (0, 1): 1 -> 1 -> 1 only, min(0.7, 0.9) = 0.7
    np.testing.assert_allclose(AttentionFlow().score_attention(att, 2)[0], np.array([0.4, 0.7, 0.0]) / 1.1, atol=1e-8)


def test_attention_methods_run_everywhere_a_method_does(run, cli, tmp_path):
    """The CLI's choices, --json, the faithfulness table and the report take them like any method."""
    import json

    _, explainer, _, _ = run
    code, out, err = cli("explain", "--model", explainer.model.folder, "--prompt", PROMPT, "--max-new-tokens", "3",
                         "--method", "attention_flow", "--method", "attention_rollout", "--faithfulness", "--json",
                         "-o", tmp_path / "r.html")
    assert code == 0, err
    data = json.loads(out)
    assert set(data["attributions"]) == {"attention_flow", "attention_rollout"}
    assert {"attention_flow", "attention_rollout"} <= set(data["aopc"])
    html = (tmp_path / "r.html").read_text()
    assert "attention_flow" in html and "attention_rollout" in html


def test_corpus_batches_attention_methods_as_single_runs(run):
    _, explainer, expl, _ = run
    a = explainer.attributor
    one = a.attribute(expl.token_ids, expl.n_prompt, method="attention_flow")
    (batched,) = a.attribute_batch([(expl.token_ids, expl.n_prompt)], method="attention_flow")
    np.testing.assert_array_equal(batched.scores, one.scores)


def test_head_view_data_equals_pytorch_and_is_kept(run, tmp_path):
    """explain(attention=True) keeps every layer's and head's probabilities (float16) for the head view:
    PyTorch's output_attentions within float16's rounding; save/load keeps them."""
    import torch
    from transformers import AutoModelForCausalLM

    src, explainer, _, _ = run
    expl = explainer.explain(PROMPT, max_new_tokens=3, methods=(), attention=True)
    model = AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager", dtype="float32").eval()
    with torch.no_grad():
        out = model(torch.as_tensor(expl.token_ids)[None], output_attentions=True)
    want = np.stack([a[0].numpy() for a in out.attentions])
    assert expl.attention.dtype == np.float16 and expl.attention.shape == want.shape
    np.testing.assert_allclose(expl.attention.astype(np.float32), want, atol=1e-3)
    again = lens.Explanation.load(expl.save(tmp_path / "e.npz"))
    assert np.array_equal(again.attention, expl.attention)


def test_a_head_view_too_large_is_refused_before_generating(run, monkeypatch):
    from lens import settings

    _, explainer, _, _ = run
    monkeypatch.setattr(settings, "MAX_PATTERN_VALUES", 100)
    with pytest.raises(lens.LensError, match="more than the head view takes"):
        explainer.explain(PROMPT, max_new_tokens=3, attention=True)


@pytest.mark.browser
def test_hovering_a_token_paints_what_it_attends_to(run, browser, tmp_path):
    from browser import Page

    _, explainer, _, _ = run
    expl = explainer.explain(PROMPT, max_new_tokens=3, methods=(), attention=True)
    pg = Page(browser)
    try:
        pg.page.goto(expl.report(tmp_path / "r.html", factors=2).as_uri())
        pg.page.wait_for_function("() => window.Bokeh && Array.from(Bokeh.index.all_views()).length > 5")
        xs, ys = pg.data("head_tokens", "x"), pg.data("head_tokens", "y")
        q = expl.n_tokens - 2
        for layer, head in (("1", "mean"), ("2", "1")):
            pg.choose("head_layer", layer)
            pg.choose("head_head", head)
            pg.hover("heads", xs[q], ys[q])
            a = expl.attention[int(layer) - 1].astype(np.float64)
            row = a.mean(0)[q] if head == "mean" else a[int(head) - 1, q]
            alpha = np.asarray(pg.data("head_tokens", "alpha"))
            np.testing.assert_allclose(alpha[1:q + 1], 0.85 * row[1:q + 1] / row[1:q + 1].max(), atol=2e-3)
            assert alpha[0] == 0 and (alpha[q + 1:] == 0).all()
        assert not [m for m in pg.console if m[0] in ("error", "pageerror")], pg.console
    finally:
        pg.close()


@pytest.fixture(scope="module")
def with_taps(tiny_llama, tmp_path_factory):
    from lens.export import export_model

    src, _ = tiny_llama
    return src, export_model(str(src), models_dir=tmp_path_factory.mktemp("attention_taps"), attention_taps=True)


def test_attention_taps_exported_on_request(with_taps, tiny_llama):
    """`lens export --attention-taps`: every layer's attention probabilities are graph outputs, validated at
    export and equal to PyTorch's output_attentions, over a prompt and in blocks that read the cache; the
    default graph has none (its speed is untouched), and the head view reads the graph's when it has them."""
    import torch
    from transformers import AutoModelForCausalLM

    from lens import hooks
    from lens.runtime import model as runtime_model

    src, folder = with_taps
    model = lens.load(folder)
    assert model.attention_taps == hooks.attention_taps(model.n_layers)
    assert "blocks.0.attn.hook_pattern" in model.manifest["validation"]["per_output"]
    assert lens.load(tiny_llama[1]).attention_taps == []
    outputs = {o.name for o in lens.load(tiny_llama[1]).session.get_outputs()}
    assert not any(o.endswith("hook_pattern") for o in outputs)
    ids = model.encode(PROMPT)
    reference = AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager", dtype="float32").eval()
    with torch.no_grad():
        want = np.stack([a[0].numpy() for a in reference(torch.as_tensor(ids)[None], output_attentions=True).attentions])
    np.testing.assert_allclose(model.attention(ids), want, atol=1e-5)
    old = runtime_model.PREFILL_BLOCK
    runtime_model.PREFILL_BLOCK = 3                                       # blocks of 3 queries, each after the cache
    try:
        np.testing.assert_allclose(model.attention(ids), want, atol=1e-5)
    finally:
        runtime_model.PREFILL_BLOCK = old
    expl = lens.Explainer(model).explain(PROMPT, max_new_tokens=2, methods=(), attention=True)
    assert expl.settings["attention_from"] == "onnxruntime"
    jax = lens.Explainer.load(tiny_llama[1]).explain(PROMPT, max_new_tokens=2, methods=(), attention=True)
    assert jax.settings["attention_from"] == "jax"
    np.testing.assert_allclose(expl.attention.astype(np.float32), jax.attention.astype(np.float32), atol=2e-3)
