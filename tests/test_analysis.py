"""Explanation, logit lens, factors and clusters against independent computations."""
from __future__ import annotations

import numpy as np
import pytest

import lens
from lens.errors import LensError


@pytest.fixture(scope="module")
def expl(tiny_model):
    return tiny_model.explain("William Shakespeare was born in the year", 10,
                              methods=("grad_x_input", "gradient"), watch=[" is", " the"])


@pytest.fixture(scope="module")
def torch_lens(expl, tiny_torch):
    """Per layer 1..n: logits of every position from PyTorch hidden states, final LayerNorm applied."""
    import torch

    with torch.no_grad():
        hs = tiny_torch(torch.as_tensor(expl.token_ids)[None], output_hidden_states=True).hidden_states
        layers = [tiny_torch.transformer.ln_f(h[0]) for h in hs[1:-1]] + [hs[-1][0]]  # last is ln_f'ed already
        return np.stack([(h @ tiny_torch.transformer.wte.weight.T).numpy() for h in layers]).astype(np.float64)


def _rank_bounds(z, target, tol=1e-4):
    """Rank of target with logits within tol of it counted either way (float noise between runtimes)."""
    t = z[target]
    return int((z > t + tol).sum()) + 1, int((z > t - tol).sum()) + 1


def test_ranks_match_pytorch_logit_lens(expl, torch_lens):
    nxt = expl.next_tokens()
    for l in range(expl.n_layers):
        for pos in range(expl.n_tokens - 1):
            lo, hi = _rank_bounds(torch_lens[l, pos], nxt[pos])
            assert lo <= expl.ranks[l, pos] <= hi, (l, pos)
    assert expl.rankings().shape == (expl.n_layers, expl.n_generated)
    np.testing.assert_array_equal(expl.rankings()[-1], 1)  # greedy: top of the real logits


def test_top_k_matches_pytorch(expl, torch_lens):
    z = torch_lens
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    k = expl.top_ids.shape[-1]
    for l in range(expl.n_layers):
        want = -np.sort(-p[l], axis=-1)[:, :k]
        np.testing.assert_allclose(expl.top_probs[l], want, rtol=1e-4, atol=1e-7)
        got_p = np.take_along_axis(p[l], expl.top_ids[l], -1)  # the ids we name have those probabilities
        np.testing.assert_allclose(got_p, expl.top_probs[l], rtol=1e-4, atol=1e-7)
    preds = expl.layer_predictions()
    assert preds[-1][0][0] == expl.tokens[expl.n_prompt]  # last layer's top-1 is the generated token


def test_watched_ranks_match_pytorch(expl, torch_lens, tiny_model):
    tid = tiny_model.token_id(" is")
    for l in range(expl.n_layers):
        for pos in range(expl.n_tokens):
            lo, hi = _rank_bounds(torch_lens[l, pos], tid)
            assert lo <= expl.watch(" is")[l, pos] <= hi
    np.testing.assert_array_equal(expl.watch(" of"), expl.watch(" of"))  # computed on demand with the model


def test_nmf_matches_sklearn(expl):
    from sklearn.decomposition import NMF

    f = expl.factors(4, layers=(0, 1), seed=3)
    a = np.maximum(expl.activations.transpose(1, 0, 2).reshape(expl.n_tokens, -1), 0)
    ref = NMF(n_components=4, init="nndsvda", random_state=3, max_iter=500)
    w = ref.fit_transform(a)
    np.testing.assert_allclose(f.token_factors, w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(f.loadings, ref.components_, rtol=1e-4, atol=1e-5)
    assert (f.token_factors >= 0).all() and (f.loadings >= 0).all()
    assert f.explained == pytest.approx(1 - np.sum((a - w @ ref.components_) ** 2) / np.sum(a ** 2), rel=1e-4)
    again = expl.factors(4, layers=(0, 1), seed=3)
    np.testing.assert_array_equal(again.token_factors, f.token_factors)
    layer, neuron, weight = f.top_neurons(0, 1)[0]
    assert weight == pytest.approx(f.loadings[0].max()) and f.loadings[0, layer * 256 + neuron] == weight


def test_single_layer_factors_and_pca(expl):
    from sklearn.decomposition import PCA

    f = expl.factors(3, layers=1)
    assert f.layers == [1] and f.loadings.shape == (3, 256)
    p = expl.factors(3, layers=1, method="pca")
    ref = PCA(n_components=3, random_state=0).fit(expl.activations[1])
    np.testing.assert_allclose(np.abs(p.loadings), np.abs(ref.components_), atol=1e-4)
    assert p.explained == pytest.approx(ref.explained_variance_ratio_.sum(), rel=1e-4)


def test_kmeans_matches_sklearn(expl):
    from sklearn.cluster import KMeans

    c = expl.clusters(5, layers=[1])
    ref = KMeans(n_clusters=5, random_state=0, n_init=4).fit(expl.activations[1].T)
    np.testing.assert_array_equal(c.labels, ref.labels_)
    assert (np.diff(c.labels[c.order]) >= 0).all()


@pytest.mark.parametrize("call,msg", [
    (lambda e: e.factors(500), "500 factors asked for, but 17 tokens allow"),
    (lambda e: e.factors(0), "0 factors"),
    (lambda e: e.factors(2, layers=7), "layer 7 is out of range: this model has layers 0 to 1"),
    (lambda e: e.factors(2, layers=[]), "selection is empty"),
    (lambda e: e.clusters(10000, layers=0), "10000 clusters"),
    (lambda e: e.layer_predictions(99), "position 99 is out of range"),
])
def test_analysis_errors(expl, call, msg):
    with pytest.raises(LensError, match=msg):
        call(expl)


@pytest.mark.parametrize("compress", [False, True])
def test_save_load_round_trip(expl, tmp_path, compress):
    path = expl.save(tmp_path / "e.npz", compress=compress)
    back = lens.Explanation.load(path)
    for name in ("token_ids", "probabilities", "ranks", "top_ids", "top_probs"):
        np.testing.assert_array_equal(getattr(back, name), getattr(expl, name))
    for name in ("hidden_states", "activations"):
        a, b = getattr(expl, name), getattr(back, name)
        if compress:
            assert b.dtype == np.float16
            np.testing.assert_allclose(b.astype(np.float32), a, rtol=1e-3, atol=1e-3 * np.abs(a).max())
        else:
            np.testing.assert_array_equal(b, a)
    for d in ("attributions", "signed", "watched"):
        assert getattr(back, d).keys() == getattr(expl, d).keys()
        for k in getattr(expl, d):
            np.testing.assert_array_equal(getattr(back, d)[k], getattr(expl, d)[k])
    for name in ("model_name", "tokens", "n_prompt", "top_tokens", "settings", "timings"):
        assert getattr(back, name) == getattr(expl, name), name
    with pytest.raises(LensError, match="was not watched"):
        back.watch(" never watched")


def test_load_errors(tmp_path):
    with pytest.raises(LensError, match="does not exist"):
        lens.Explanation.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(LensError, match="not a lens explanation file"):
        lens.Explanation.load(tmp_path / "bad.npz")
