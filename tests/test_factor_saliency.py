"""The saliency of factors (the article's future work): gradient x input of each NMF factor's readout
of the MLP neurons at each position, against torch autograd through forward hooks; kept by save/load;
painted in the report when a sparkline point is hovered."""
from __future__ import annotations

import numpy as np
import pytest

import lens

PROMPT = "William Shakespeare was born in the year"


@pytest.fixture(scope="module", params=["tiny", "tiny_llama"])
def case(request):
    src, folder = request.getfixturevalue(request.param)
    explainer = lens.Explainer.load(folder)
    expl = explainer.explain(PROMPT, max_new_tokens=4)
    scores = explainer.factor_saliency(expl, 3, layers=(0, 1))
    return src, explainer, expl, scores


def _torch_saliency(src, expl, factors) -> np.ndarray:
    """[k, n, n] by torch autograd: the readout loadings[f] . neurons(p) / |loadings[f]|^2, the neurons
    read by pre-hooks on the MLP down-projections, one backward per (factor, position)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager", dtype="float32").eval()
    down = lens.families.get(model.config.model_type).torch_modules(model)[2]
    acts = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a, l=l: acts.__setitem__(l, a[0])) for l, m in enumerate(down)]
    load = factors.loadings.reshape(factors.k, len(factors.layers), -1)
    ids = torch.as_tensor(expl.token_ids)
    wte = model.get_input_embeddings().weight.detach()
    n = len(ids)
    out = np.zeros((factors.k, n, n))
    try:
        for f in range(factors.k):
            for p in factors.positions:
                x = wte[ids].clone().requires_grad_(True)
                model(inputs_embeds=x[None])
                readout = sum((acts[l][0, p] * torch.as_tensor(load[f, j])).sum() for j, l in enumerate(factors.layers))
                (readout / float((load[f] ** 2).sum())).backward()
                s = (x.grad * x).norm(dim=-1)[:p + 1].detach().numpy()
                out[f, p, :p + 1] = s / s.sum()
    finally:
        for h in hooks:
            h.remove()
    return out


def test_factor_saliency_equals_torch_autograd(case):
    src, _, expl, scores = case
    factors = expl.factors(3, layers=(0, 1))
    want = _torch_saliency(src, expl, factors)
    assert scores.shape == (3, expl.n_tokens, expl.n_tokens)
    np.testing.assert_allclose(scores, want, atol=1e-5)
    assert (scores[:, 0] == 0).all()                                   # the first position is left out
    np.testing.assert_allclose(scores[:, 1:].sum(-1), 1, atol=1e-5)
    assert expl.settings["factor_saliency"] == {"k": 3, "layers": [0, 1], "positions": list(range(1, expl.n_tokens))}


def test_factor_saliency_is_saved_and_matched_to_its_factors(case, tmp_path):
    _, _, expl, scores = case
    again = lens.Explanation.load(expl.save(tmp_path / "e.npz"))
    assert again == expl and np.array_equal(again.factor_saliency, scores)
    assert again.factor_saliency_for(again.factors(3, layers=(0, 1))) is not None
    assert again.factor_saliency_for(again.factors(2, layers=(0, 1))) is None      # other factors: not shown
    assert again.factor_saliency_for(again.factors(3, layers=(1,))) is None


def test_a_crafted_factor_saliency_is_refused(case, tmp_path):
    _, _, expl, _ = case
    import dataclasses

    bad = dataclasses.replace(expl, factor_saliency=np.full((3, 2, 2), 0.5, np.float32))
    with pytest.raises(lens.LensError, match="factor_saliency has shape"):
        lens.Explanation.load(bad.save(tmp_path / "bad.npz"))


@pytest.mark.browser
def test_hovering_a_sparkline_point_paints_what_drives_the_factor(case, browser, tmp_path):
    from browser import Page

    _, _, expl, scores = case
    path = expl.report(tmp_path / "r.html", factors=3, layers=(0, 1))
    pg = Page(browser)
    try:
        pg.page.goto(path.as_uri())
        pg.page.wait_for_function("() => window.Bokeh && Array.from(Bokeh.index.all_views()).length > 5")
        for f, token in ((0, 3), (2, expl.n_tokens - 1)):                 # a prompt token, a generated one
            pg.hover("sparklines", token, f + 0.5)
            pos = token if token < expl.n_prompt else token - 1        # a generated token's point: the position before
            row = scores[f, pos]
            alpha = np.asarray(pg.data("factor_saliency_tokens", "alpha"))
            np.testing.assert_allclose(alpha[:pos + 1], 0.85 * row[:pos + 1] / row[:pos + 1].max(), atol=1e-4)
            assert (alpha[pos + 1:] == 0).all()
            assert f"factor {f + 1} at position {pos}" in pg.text_of("factor_saliency_details")
        assert not [m for m in pg.console if m[0] in ("error", "pageerror")], pg.console
    finally:
        pg.close()


def test_other_layers_after_the_first_call_are_their_own(case):
    """The compiled VJP bakes the layers in: a second call with other layers must not reuse the first's."""
    _, explainer, expl, _ = case
    one = explainer.attributor.factor_saliency(expl.token_ids, expl.factors(2, layers=(1,)).loadings, [1], [3, 4])
    both = expl.factors(2, layers=(0, 1))
    again = explainer.attributor.factor_saliency(expl.token_ids, both.loadings, [0, 1], [3, 4])
    first_only = explainer.attributor.factor_saliency(expl.token_ids, both.loadings[:, :expl.activations.shape[2]],
                                                      [0], [3, 4])
    assert not np.allclose(again[:, 3], first_only[:, 3]) and not np.allclose(one[:, 3], first_only[:, 3])
