"""Interventions (ablate, scale, steer, patch, remove a factor), activation and attribution patching:
each equal to the same edit made with PyTorch forward hooks on the same weights (references.torch_hooks),
on tiny GPT-2 and Llama; bad interventions are one line and exit 2."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import lens
from lens import interventions as I
from lens.errors import LensError
from references import torch_greedy, torch_hooks, torch_logit_difference, torch_patch, torch_reference

PROMPT = "The quick brown fox jumps over the lazy"
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tiny, tiny_llama, tiny_torch):
    """(lens Explainer, transformers model) of one tiny family."""
    from transformers import AutoModelForCausalLM

    if request.param == "gpt2":
        return lens.Explainer(lens.load(tiny[1])), tiny_torch
    return (lens.Explainer(lens.load(tiny_llama[1])),
            AutoModelForCausalLM.from_pretrained(tiny_llama[0], attn_implementation="eager").eval())


def _rows(src, rows):
    def fn(t):
        t = t.clone()
        t[:, rows] = torch.as_tensor(src[rows])
        return t
    return fn


def _cases(m, tm, other_ids):
    """(interventions, the same edits as torch functions of a hooked tensor) of every kind."""
    d = m.d_model
    vec = np.random.default_rng(0).normal(size=d).astype(np.float32)
    v = torch.as_tensor(vec)
    at = lambda t, p: (torch.arange(t.shape[1]) == p)[None, :, None]  # noqa: E731
    other = {}
    with torch.no_grad(), torch_hooks(tm, {}, other):
        tm(torch.as_tensor(other_ids)[None])
    src = other["blocks.1.hook_resid_pre"][0].numpy()
    mean = other["blocks.0.mlp.hook_post"][0].mean(0)                        # mean ablation over a reference text
    dh = m.manifest["d_head"]
    return {
        "zero a head": ([I.ablate("blocks.1.attn.hook_z", units=[1])],
                        {"blocks.1.attn.hook_z": lambda t: torch.cat([t[..., :dh], 0 * t[..., dh:2 * dh],
                                                                      t[..., 2 * dh:]], -1)}),
        "zero neurons": ([I.ablate("blocks.1.mlp.hook_post", units=[3, 7, 11])],
                         {"blocks.1.mlp.hook_post": lambda t: t.index_fill(-1, torch.tensor([3, 7, 11]), 0.0)}),
        "mean-ablate a layer's neurons": (
            [I.ablate("blocks.0.mlp.hook_post", value=mean.numpy())],
            {"blocks.0.mlp.hook_post": lambda t: mean.expand_as(t).clone()}),
        "steer the residual stream": ([I.steer("blocks.1.hook_resid_pre", vec, 4.0)],
                                      {"blocks.1.hook_resid_pre": lambda t: t + 4.0 * v}),
        "steer one position's embedding": ([I.steer("blocks.0.hook_resid_pre", vec, 3.0, positions=[2])],
                                           {"blocks.0.hook_resid_pre": lambda t: t + 3.0 * v * at(t, 2)}),
        "scale some dimensions": ([I.scale("blocks.0.hook_resid_post", -2.0, units=[1, 2, 3])],
                                  {"blocks.0.hook_resid_post": lambda t: torch.cat(
                                      [t[..., :1], -2.0 * t[..., 1:4], t[..., 4:]], -1)}),
        "patch positions from another run": (
            [I.patch("blocks.1.hook_resid_pre", src, positions=[1, 3])],
            {"blocks.1.hook_resid_pre": _rows(src, [1, 3])}),
    }


@pytest.mark.parametrize("case", ["zero a head", "zero neurons", "mean-ablate a layer's neurons", "steer the residual stream",
                                  "steer one position's embedding", "scale some dimensions",
                                  "patch positions from another run"])
def test_each_intervention_equals_pytorch_forward_hooks(pair, case):
    """Generation in the ONNX graph (KV-cached, the edit inside the graph) gives PyTorch's greedy tokens
    under the same hooks (run without a cache, so positions are absolute); its logits and taps match, and
    the JAX port's grad x input under the edit equals torch autograd under the hooks."""
    explainer, tm = pair
    m = explainer.model
    ids = m.prompt_ids(PROMPT)
    ivs, edits = _cases(m, tm, m.prompt_ids(CLEAN))[case]
    gen = m.intervened(ivs).generate(ids, 5, trace=True)
    want_new, _ = torch_greedy(tm, ids, 5, edits)
    assert gen.generated_ids.tolist() == want_new
    grab: dict = {}
    with torch.no_grad(), torch_hooks(tm, edits, grab):
        ref = tm(torch.as_tensor(gen.token_ids)[None]).logits[0].numpy()
    with torch.no_grad():
        plain = tm(torch.as_tensor(gen.token_ids)[None]).logits[0].numpy()
    scale = np.abs(ref).max()
    assert np.abs(gen.trace.logits - ref).max() <= 1e-4 * scale
    assert np.abs(plain - ref).max() > 1e-2 * scale, "the intervention must change the output"
    # the taps show the edited values (TransformerLens: a hook's output is what later layers read)
    layer = int(ivs[0].hook.split(".")[1])
    if ".mlp." in ivs[0].hook:
        got = gen.trace.activations[layer]
        want = grab[f"blocks.{layer}.mlp.hook_post"][0].numpy()
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    if ivs[0].hook.endswith("hook_z"):  # the graph's head tap holds the edited heads
        dh = m.manifest["d_head"]
        z = m.intervened(ivs).session_run(gen.token_ids, outputs=[ivs[0].hook])[ivs[0].hook][0]
        want = grab[ivs[0].hook][0].numpy()
        assert np.abs(z - want).max() <= 1e-4 * max(1.0, np.abs(want).max()) and np.abs(z[:, dh:2 * dh]).max() == 0
    a = explainer.attributor.attribute(gen.token_ids, len(ids), interventions=ivs)
    with torch_hooks(tm, edits):
        scores, signed, values = torch_reference(tm, gen.token_ids, len(ids))
    np.testing.assert_allclose(a.scores, scores, atol=2e-5)
    np.testing.assert_allclose(a.target_values, values, rtol=1e-4, atol=1e-4)


def test_head_ablation_in_the_jax_port_equals_pytorch(pair):
    """hook_z (one head's output before the projection) is edited in the JAX port: attributions of the
    model with a head zeroed equal torch autograd with the output projection's input zeroed there."""
    explainer, tm = pair
    m = explainer.model
    ids = m.prompt_ids(PROMPT) + [11, 13, 17]
    dh = m.d_model // m.n_heads
    it = I.ablate("blocks.1.attn.hook_z", units=[1])
    a = explainer.attributor.attribute(ids, len(ids) - 3, interventions=[it])
    edits = {"blocks.1.attn.hook_z": lambda t: torch.cat([t[..., :dh], 0 * t[..., dh:2 * dh], t[..., 2 * dh:]], -1)}
    with torch_hooks(tm, edits):
        scores, _, values = torch_reference(tm, ids, len(ids) - 3)
    plain = explainer.attributor.attribute(ids, len(ids) - 3)
    np.testing.assert_allclose(a.scores, scores, atol=2e-5)
    np.testing.assert_allclose(a.target_values, values, rtol=1e-4, atol=1e-4)
    assert np.abs(plain.target_values - values).max() > 1e-3


def test_factor_removal_equals_subtracting_its_reconstruction_by_hand(pair):
    explainer, tm = pair
    m = explainer.model
    expl = explainer.explain(PROMPT, max_new_tokens=4, methods=())
    f = expl.factors(3)
    ids = expl.token_ids.tolist()
    causal = explainer.causal_factors(expl, 3)
    for factor in range(3):
        w = torch.as_tensor(f.token_factors[:, factor])                          # [n] 0 where left out
        h = torch.as_tensor(f.loadings[factor].reshape(len(f.layers), m.d_mlp))
        edits = {f"blocks.{l}.mlp.hook_post": (lambda t, i=i: t - (w[:t.shape[1], None] * h[i])[None])
                 for i, l in enumerate(f.layers)}
        with torch.no_grad(), torch_hooks(tm, edits):
            z = tm(torch.as_tensor(ids)[None]).logits[0].double()
        p = torch.softmax(z, -1)[np.arange(expl.n_prompt - 1, len(ids) - 1), ids[expl.n_prompt:]].numpy()
        np.testing.assert_allclose(causal[factor], p - expl.probabilities, atol=2e-5)
    assert np.abs(causal).max() > 1e-4


def test_explain_with_interventions_records_what_the_unedited_model_does(pair):
    explainer, tm = pair
    m = explainer.model
    ablation = I.ablate("blocks.1.mlp.hook_post")                              # every neuron of the last layer
    expl = explainer.explain(PROMPT, max_new_tokens=5, interventions=[ablation], methods=("grad_x_input",))
    plain = m.generate(PROMPT, 5)
    edited = m.intervened([ablation]).generate(PROMPT, 5)
    w = expl.what_if
    assert w["original_ids"] == plain.generated_ids.tolist()
    assert expl.token_ids.tolist() == edited.token_ids.tolist()
    assert np.abs(expl.activations[1]).max() == 0                              # the trace is the edited run's
    # the unedited model's probabilities and logit-lens ranks of the edited run's tokens
    forced = m.force(expl.token_ids[:expl.n_prompt].tolist(), expl.token_ids[expl.n_prompt:].tolist())
    np.testing.assert_allclose(w["unedited_probabilities"], forced.probabilities, rtol=1e-5)
    ll = explainer.logit_lens.analyse(forced.trace.hidden_states, expl.token_ids[1:].tolist() + [0], top_k=1)
    assert np.array_equal(np.asarray(w["unedited_ranks"]), ll["ranks"][:, expl.n_prompt - 1:-1])
    assert w["interventions"] == [ablation.describe()]


def test_activation_patching_equals_pytorch(pair):
    """Every entry of the three heatmaps equals PyTorch's patched run with the clean activation swapped in
    by a forward hook (TransformerLens's get_act_patch_resid_pre / attn_head_out_all_pos / mlp definitions),
    and attribution patching equals PyTorch's first-order estimate (clean - corrupted) . gradient."""
    explainer, tm = pair
    m = explainer.model
    C, X = m.prompt_ids(CLEAN), m.prompt_ids(CORRUPTED)
    A, F = m.token_id(" Mary"), m.token_id(" John")
    res = explainer.patch(CLEAN, CORRUPTED, " Mary", " John")
    clean: dict = {}
    with torch.no_grad(), torch_hooks(tm, {}, clean):
        tm(torch.as_tensor(C)[None])

    mc, mx = torch_logit_difference(tm, C, A, F), torch_logit_difference(tm, X, A, F)
    assert res.clean_metric == pytest.approx(mc, abs=1e-4) and res.corrupted_metric == pytest.approx(mx, abs=1e-4)
    L, n, H = m.n_layers, len(C), m.n_heads
    dh = m.d_model // H
    want = {"resid_pre": np.zeros((L, n)), "mlp_post": np.zeros((L, n)), "z": np.zeros((L, H))}
    for kind, w in want.items():
        for l, unit in np.ndindex(w.shape):
            w[l, unit] = (torch_logit_difference(tm, X, A, F, torch_patch(clean, l, kind, unit, dh)) - mx) / (mc - mx)
    for kind, w in want.items():
        assert np.abs(res.exact[kind] - w).max() <= 1e-4 * max(1.0, np.abs(w).max()), kind
    assert res.runs == L * (2 * n + H)
    # attribution patching against torch autograd at the corrupted run
    deltas: dict = {}

    def leaf(name):
        def fn(t):
            deltas[name] = torch.zeros_like(t, requires_grad=True)
            return t + deltas[name]
        return fn
    names = [f"blocks.{l}.{h}" for l in range(L) for h in ("hook_resid_pre", "mlp.hook_post", "attn.hook_z")]
    corrupt: dict = {}
    with torch_hooks(tm, {k: leaf(k) for k in names}, corrupt):
        z = tm(torch.as_tensor(X)[None]).logits[0, -1]
        (z[A] - z[F]).backward()
    for kind, suffix in (("resid_pre", "hook_resid_pre"), ("mlp_post", "mlp.hook_post"), ("z", "attn.hook_z")):
        per = [((clean[f"blocks.{l}.{suffix}"] - corrupt[f"blocks.{l}.{suffix}"]) * deltas[f"blocks.{l}.{suffix}"].grad)[0]
               for l in range(L)]
        est = np.stack([(t.reshape(n, H, dh).sum((0, 2)) if kind == "z" else t.sum(-1)).numpy() for t in per])
        np.testing.assert_allclose(res.estimate[kind], est / (mc - mx), atol=1e-4)
    assert set(res.to_dict()["agreement"]) == {"resid_pre", "z", "mlp_post"}


# ---------------------------------------------------------------- refused
def test_bad_interventions_are_refused_by_name(tiny_model):
    dims = I.Dims.of(tiny_model.manifest)
    bad = [
        (lambda: tiny_model.intervened([I.ablate("blocks.0.attn.hook_q")]), "cannot intervene at"),
        (lambda: tiny_model.intervened([I.ablate("blocks.9.mlp.hook_post")]), "layer 9 does not exist"),
        (lambda: tiny_model.intervened([I.ablate("blocks.0.mlp.hook_post", units=[10 ** 6])]), "neuron 1000000"),
        (lambda: tiny_model.intervened([I.steer("blocks.1.hook_resid_pre", np.ones(7))]), "does not fit"),
        (lambda: tiny_model.intervened([I.ablate("blocks.0.attn.hook_z", units=[99])]), "head 99 does not exist"),
        (lambda: I.scale("blocks.0.hook_resid_post", float("nan")), "finite"),
        (lambda: I.steer("blocks.0.hook_resid_post", ["a", "b"]), "must be numbers"),
        (lambda: I.ablate("blocks.0.hook_resid_post", value="zero"), "must be numbers"),
        (lambda: I.patch("blocks.0.hook_resid_post", np.ones((3, 64)), positions=[5]), "position 5 from a run of 3"),
        (lambda: I.parse_neuron("3", dims), "LAYER.NEURON"),
        (lambda: I.Edits([I.ablate("blocks.0.mlp.hook_post", positions=[50])], dims).check_length(10),
         "position 50 is past"),
    ]
    for call, message in bad:
        with pytest.raises(LensError, match=message):
            call()


def test_a_graph_without_head_taps_refuses_head_edits_by_name(tiny):
    """A folder exported before head taps existed (its manifest lists none) still explains, and refuses
    head interventions before any work, naming the re-export."""
    import json

    m = json.loads((tiny[1] / "manifest.json").read_text())
    m["taps"] = {k: v for k, v in m["taps"].items() if not k.endswith(".hook_z")}
    old = lens.runtime.Model(tiny[1], manifest_data=m)
    assert old.head_taps == [] and old.intervened([I.ablate("blocks.0.mlp.hook_post", units=[1])]).generate("a", 1)
    with pytest.raises(LensError, match="no tap blocks.1.attn.hook_z.*lens export --force"):
        lens.Explainer(old).explain("a b", max_new_tokens=2, interventions=[I.ablate("blocks.1.attn.hook_z", units=[0])])


def test_the_cli_refuses_bad_interventions_in_one_line(tiny, tmp_path, cli):
    model = str(tiny[1])
    np.save(tmp_path / "short.npy", np.ones(5, np.float32))
    cases = [
        (["explain", "--model", model, "--prompt", "hi", "--ablate", "0.99999"], "neuron 99999 does not exist"),
        (["explain", "--model", model, "--prompt", "hi", "--ablate", "7.1"], "layer 7 does not exist"),
        (["explain", "--model", model, "--prompt", "hi", "--ablate", "x"], "LAYER.NEURON"),
        (["explain", "--model", model, "--prompt", "hi", "--steer", f"1:{tmp_path / 'short.npy'}:2"], "does not fit"),
        (["explain", "--model", model, "--prompt", "hi", "--steer", f"1:{tmp_path / 'none.npy'}:2"], "cannot read"),
        (["explain", "--model", model, "--prompt", "hi", "--steer", "1:x.npy"], "LAYER:FILE.npy:SCALE"),
        (["explain", "--model", model, "--prompt", "hi", "--steer", f"blocks.0.attn.hook_q:{tmp_path / 'short.npy'}:2"],
         "cannot intervene at"),
        (["explain", "--model", model, "--prompt", "hi", "--ablate-head", "0.9"], "head 9 does not exist"),
        (["explain", "--model", model, "--prompt", "hi", "--ablate-factor", "0"], "numbered from 1"),
        (["explain", "--model", model, "--prompt", "hi", "--ablate", "0.1", "--causal-factors"], "unedited model"),
        (["patch", "--model", model, "--clean", "a b c", "--corrupted", "a b c d", "--answer", " a", "--foil", " b"],
         "same length"),
        (["patch", "--model", model, "--clean", "a b", "--corrupted", "a c", "--answer", " Mary Ann", "--foil", " b"],
         "one token"),
        (["patch", "--model", model, "--clean", "a b", "--corrupted", "a b", "--answer", " a", "--foil", " b"],
         "same logit difference"),
    ]
    for args, message in cases:
        code, out, err = cli(*args, "-o", str(tmp_path / "page.html"))
        assert code == 2, (args, err)
        assert message in err and len(err.strip().splitlines()) <= 2, (args, err)
        assert "Traceback" not in err
        assert not (tmp_path / "page.html").exists()


def test_lens_patch_json_and_page(tiny, tmp_path, cli):
    import json

    page = tmp_path / "p.html"
    code, out, err = cli("patch", "--model", tiny[1], "--clean", CLEAN, "--corrupted", CORRUPTED, "--answer", " Mary",
                         "--foil", " John", "--json", "-o", page)
    assert code == 0, err
    d = json.loads(out)
    assert np.asarray(d["exact"]["resid_pre"]).shape == (2, len(d["clean_tokens"]))
    assert np.asarray(d["exact"]["z"]).shape == (2, 4)
    # the last layer's residual stream patched at the one differing position restores the clean answer fully
    diff = [i for i, (a, b) in enumerate(zip(d["clean_tokens"], d["corrupted_tokens"])) if a != b]
    assert d["exact"]["resid_pre"][0][diff[0]] == pytest.approx(1.0, abs=1e-4)
    html = page.read_text()
    assert "activation patching" in html and "attribution patching (estimate)" in html


def test_no_method_beating_random_is_said_plainly():
    from lens.analysis.faithfulness import beats_random, no_method_note

    f = {"grad_x_input": {"aopc_morf": 0.50, "aopc_lerf": 0.525}, "attnlrp": {"aopc_morf": 0.515, "aopc_lerf": 0.507},
         "random": {"aopc_morf": 0.564, "aopc_lerf": 0.477}}
    assert beats_random(f) == [] and "no attribution method beats a random ranking" in no_method_note(f)
    f["attnlrp"] = {"aopc_morf": 0.6, "aopc_lerf": 0.4}
    assert beats_random(f) == ["attnlrp"] and no_method_note(f) is None


def test_what_if_and_causal_factors_are_saved_and_loaded(tiny_explainer, tmp_path):
    expl = tiny_explainer.explain(PROMPT, max_new_tokens=3, methods=(),
                                  interventions=[I.ablate("blocks.0.mlp.hook_post", units=[1, 2])])
    plain = tiny_explainer.explain(PROMPT, max_new_tokens=3, methods=())
    tiny_explainer.causal_factors(plain, 2)
    for e in (expl, plain):
        back = lens.Explanation.load(e.save(tmp_path / "e.npz"))
        assert back == e and back.what_if == e.what_if
        assert np.array_equal(back.causal_factors, e.causal_factors)
    assert expl.what_if and plain.causal_factors.shape == (2, 3)


def test_removing_a_report_factor_from_the_command_line(tiny, tiny_explainer, tmp_path, cli):
    """`--ablate-factor 2` (numbered as the report shows factors) removes index 1 of the unedited run's
    factorisation: the what-if numbers equal `remove_factor` applied by hand, the continuation is kept."""
    import json

    code, out, err = cli("explain", "--model", tiny[1], "--prompt", PROMPT, "--max-new-tokens", "4", "--factors", "3",
                         "--ablate-factor", "2", "--no-attribution", "--json")
    assert code == 0, err
    d = json.loads(out)
    plain = tiny_explainer.explain(PROMPT, max_new_tokens=4, methods=())
    edited = tiny_explainer.model.intervened(I.remove_factor(plain.factors(3), 1))
    want = edited.force(plain.token_ids[:plain.n_prompt].tolist(), plain.token_ids[plain.n_prompt:].tolist())
    assert d["token_ids"] == plain.token_ids.tolist() and d["what_if"]["forced"]
    np.testing.assert_allclose(d["probabilities"], want.probabilities, rtol=1e-5)
    assert d["what_if"]["interventions"] == ["remove factor 2"]
    code, _, err = cli("explain", "--model", tiny[1], "--prompt", PROMPT, "--factors", "3", "--ablate-factor", "4",
                       "-o", tmp_path / "r.html")
    assert code == 2 and "there are 3 factors, 1..3" in err and not (tmp_path / "r.html").exists()


def test_mean_ablation_over_a_reference_text(pair):
    """`model.mean_activation` is the mean of the hook over the reference text's positions (the first left
    out) in PyTorch, and ablating to it equals PyTorch with the hook set to that mean."""
    explainer, tm = pair
    m = explainer.model
    ref_ids = m.prompt_ids(CLEAN)
    grab: dict = {}
    with torch.no_grad(), torch_hooks(tm, {}, grab):
        tm(torch.as_tensor(ref_ids)[None])
    want = grab["blocks.1.mlp.hook_post"][0, 1:].mean(0)
    mean = m.mean_activation("blocks.1.mlp.hook_post", CLEAN)
    np.testing.assert_allclose(mean, want.numpy(), atol=1e-5)
    resid = grab["blocks.1.hook_resid_pre"][0, 1:].mean(0).numpy()        # read from the tap before it
    np.testing.assert_allclose(m.mean_activation("blocks.1.hook_resid_pre", CLEAN), resid,
                               atol=1e-5 * max(1.0, float(np.abs(resid).max())))
    ids = m.prompt_ids(PROMPT)
    gen = m.intervened([I.ablate("blocks.1.mlp.hook_post", value=mean)]).generate(ids, 3, trace=True)
    assert gen.generated_ids.tolist() == torch_greedy(tm, ids, 3, {"blocks.1.mlp.hook_post":
                                                                   lambda t: want.expand_as(t).clone()})[0]
    with pytest.raises(LensError, match="cannot intervene at"):
        m.mean_activation("blocks.1.attn.hook_q", CLEAN)


def test_masked_passes_keep_edits_at_their_positions(pair):
    """Faithfulness's masked passes leave masked positions out of the graph call (the others keep their
    position ids): a position-specific edit still lands on its own position, as in PyTorch's one pass per
    mask under the same hook, and a left-padded batch keeps each row's positions."""
    explainer, tm = pair
    m = explainer.model
    rng = np.random.default_rng(5)
    ids = rng.integers(0, m.d_vocab, 12)
    masks = (rng.random((30, 12)) > rng.random((30, 1))).astype(np.int64)
    masks[0], masks[1, 0], masks[2, 3], masks[3, 6:] = 1, 0, 0, 0
    vec = rng.normal(size=m.d_model).astype(np.float32) * 4
    edited = m.intervened([I.steer("blocks.1.hook_resid_pre", vec, positions=[5, 9])])
    got = edited.masked_probabilities(ids, masks, target=7)
    at = torch.zeros(12, 1)
    at[[5, 9]] = 1
    with torch.no_grad(), torch_hooks(tm, {"blocks.1.hook_resid_pre": lambda t: t + at * torch.as_tensor(vec)}):
        logits = tm(torch.as_tensor(ids)[None].repeat(30, 1), attention_mask=torch.as_tensor(masks),
                    position_ids=torch.arange(12)[None].repeat(30, 1)).logits[:, -1].double()
    np.testing.assert_allclose(got, torch.softmax(logits, -1)[:, 7].numpy(), rtol=1e-4, atol=1e-7)
    assert np.abs(got / m.masked_probabilities(ids, masks, target=7) - 1).max() > 0.05  # the edit does something
    prompts = [PROMPT, "A much longer prompt than the other, with more tokens in it,"]
    batch = edited.generate_batch(prompts, 3)
    for p, g in zip(prompts, batch):
        assert g.generated_ids.tolist() == edited.generate(p, 3).generated_ids.tolist()


def test_patching_in_chunks_equals_one_batch(tiny_explainer, monkeypatch):
    """A long prompt's patched runs go through in several padded batches: the same numbers."""
    from lens.grad import patching

    whole = tiny_explainer.patch(CLEAN, CORRUPTED, " Mary", " John")
    monkeypatch.setattr(patching, "runs_per_call", lambda arch, n: 3)        # 14 positions: 5 chunks, the last padded
    chunked = tiny_explainer.patch(CLEAN, CORRUPTED, " Mary", " John")
    for k in whole.exact:
        np.testing.assert_allclose(chunked.exact[k], whole.exact[k], atol=2e-5)  # batch size changes rounding only
    assert chunked.runs == whole.runs
