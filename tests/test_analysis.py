"""Explanation, logit lens, factors and clusters against independent computations."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import lens
from lens.errors import LensError
from references import assert_ranks_match, torch_logit_lens


@pytest.fixture(scope="module")
def expl(tiny_explainer):
    return tiny_explainer.explain("William Shakespeare was born in the year", max_new_tokens=10,
                                  methods=("grad_x_input", "gradient"), watch=[" is", " the"])


@pytest.fixture(scope="module")
def torch_lens(expl, tiny_torch):
    return torch_logit_lens(tiny_torch, expl.token_ids)


def test_ranks_match_pytorch_logit_lens(expl, torch_lens):
    assert_ranks_match(expl.ranks[:, :-1], torch_lens[:, :-1], expl.next_tokens()[:-1])
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


def test_watched_ranks_match_pytorch(expl, torch_lens, tiny_model, tiny_explainer):
    n = expl.n_tokens
    assert_ranks_match(expl.watch(" is"), torch_lens, [tiny_model.token_id(" is")] * n)
    with pytest.raises(LensError, match="was not watched"):
        expl.watch(" of")
    # a token not watched when explaining, computed afterwards with the model's explainer
    assert_ranks_match(expl.watch(" of", tiny_explainer), torch_lens, [tiny_model.token_id(" of")] * n)


def _nndsvda_reference(x, k, eps=1e-6):
    """NNDSVDa (Boutsidis & Gallopoulos 2008, "a": zeros filled with the mean) from its definition, on
    numpy's full SVD."""
    u, s, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    w, h = np.zeros((x.shape[0], k)), np.zeros((k, x.shape[1]))
    w[:, 0], h[0] = np.sqrt(s[0]) * np.abs(u[:, 0]), np.sqrt(s[0]) * np.abs(vt[0])
    for j in range(1, k):
        pos = np.maximum(u[:, j], 0), np.maximum(vt[j], 0)
        neg = np.maximum(-u[:, j], 0), np.maximum(-vt[j], 0)
        (a, b) = max((pos, neg), key=lambda p: np.linalg.norm(p[0]) * np.linalg.norm(p[1]))
        sigma = np.linalg.norm(a) * np.linalg.norm(b)
        w[:, j] = np.sqrt(s[j] * sigma) * a / np.linalg.norm(a)
        h[j] = np.sqrt(s[j] * sigma) * b / np.linalg.norm(b)
    w[w < eps], h[h < eps] = 0, 0
    w[w == 0], h[h == 0] = x.mean(), x.mean()
    return w.astype(x.dtype), h.astype(x.dtype)


def _sklearn_nmf(a, k):
    """scikit-learn's NMF (its public API) from the NNDSVDa start of `_nndsvda_reference`."""
    from sklearn.decomposition import NMF

    w0, h0 = _nndsvda_reference(a, k)
    ref = NMF(n_components=k, init="custom", max_iter=500, tol=1e-3)
    return ref, ref.fit_transform(a, W=w0.astype(a.dtype), H=h0.astype(a.dtype)), (w0, h0)


def test_nndsvda_equals_its_definition(expl):
    from lens.analysis.nmf import nndsvda

    for layers, k in (((0, 1), 4), (1, 3)):
        a = np.maximum(expl.activations[list(np.atleast_1d(layers))].transpose(1, 0, 2).reshape(expl.n_tokens, -1), 0)
        for x in (a, a.T[:, :20]):                                  # wide and tall
            w, h = nndsvda(x, k)
            w0, h0 = _nndsvda_reference(x, k)
            np.testing.assert_allclose(w, w0, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(h, h0, rtol=1e-4, atol=1e-6)


def test_nmf_matches_sklearn(expl):
    f = expl.factors(4, layers=(0, 1), seed=3, include_first=True)
    a = np.maximum(expl.activations.transpose(1, 0, 2).reshape(expl.n_tokens, -1), 0)
    ref, w, _ = _sklearn_nmf(a, 4)
    np.testing.assert_allclose(f.token_factors, w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(f.loadings, ref.components_, rtol=1e-4, atol=1e-5)
    assert (f.token_factors >= 0).all() and (f.loadings >= 0).all()
    assert f.explained == pytest.approx(1 - np.sum((a - w @ ref.components_) ** 2) / np.sum(a ** 2), rel=1e-4)
    again = expl.factors(4, layers=(0, 1), seed=3, include_first=True)
    np.testing.assert_array_equal(again.token_factors, f.token_factors)
    layer, neuron, weight = f.top_neurons(0, 1)[0]
    assert weight == pytest.approx(f.loadings[0].max()) and f.loadings[0, layer * 256 + neuron] == weight


def test_nmf_takes_sklearns_steps():
    """lens's numpy NMF against scikit-learn's coordinate descent from the same start: the same
    iterations to the same tolerance, the same factors, in float32 and float64."""
    from sklearn.decomposition import NMF

    from lens.analysis.nmf import nmf, nndsvda

    rng = np.random.default_rng(0)
    for m, n, k, dtype in ((30, 500, 4, np.float32), (200, 12, 3, np.float64), (9, 40, 9, np.float32)):
        x = np.maximum(rng.standard_normal((m, n)) * rng.random(n), 0).astype(dtype)
        x[:, ::7] = 0                                                # columns the factors never load on
        w0, h0 = nndsvda(x, k)
        ref = NMF(k, init="custom", tol=1e-3, max_iter=400)
        w_ref = ref.fit_transform(x, W=w0.copy(), H=h0.copy())
        w, h, iterations = nmf(x, w0, h0, tol=1e-3, max_iter=400)
        assert iterations == ref.n_iter_ > 5 and w.dtype == h.dtype == dtype
        np.testing.assert_allclose(w, w_ref, rtol=1e-3, atol=1e-4 * w_ref.max())
        np.testing.assert_allclose(h, ref.components_, rtol=1e-3, atol=1e-4 * h.max())


def _same_partition(a, b) -> bool:
    pairs = np.unique(np.stack([a, b]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_kmeans_is_a_local_optimum_and_finds_separable_clusters():
    """Lloyd's fixed point (every row nearest its own cluster's mean), seeded, and on well-separated
    blobs the same partition as scikit-learn's KMeans."""
    from sklearn.cluster import KMeans

    from lens.analysis.kmeans import kmeans

    rng = np.random.default_rng(1)
    for trial in range(30):
        n, d, k = int(rng.integers(12, 80)), int(rng.integers(2, 40)), int(rng.integers(2, 7))
        centres = rng.normal(size=(k, d)) * 20
        x = (centres[np.arange(n) % k] + rng.normal(size=(n, d))).astype(np.float32)
        labels = kmeans(x, k, seed=trial)
        np.testing.assert_array_equal(labels, kmeans(x, k, seed=trial))
        means = np.stack([x[labels == c].mean(0) for c in range(k)])
        nearest = ((x[:, None] - means[None]) ** 2).sum(-1).argmin(1)
        np.testing.assert_array_equal(nearest, labels)
        assert _same_partition(labels, np.arange(n) % k), trial
        assert _same_partition(labels, KMeans(k, random_state=0, n_init=4).fit(x).labels_), trial
    noisy = rng.normal(size=(40, 8)).astype(np.float32)             # no structure: still a fixed point
    labels = kmeans(noisy, 5, seed=0)
    means = np.stack([noisy[labels == c].mean(0) for c in np.unique(labels)])
    assert (np.unique(labels)[((noisy[:, None] - means[None]) ** 2).sum(-1).argmin(1)] == labels).all()


def test_factors_leave_the_first_position_out_by_default(expl):
    """The attention sink: by default NMF sees positions 1.., and explains only those."""
    f = expl.factors(3, layers=1, seed=2)
    a = np.maximum(expl.activations[1, 1:], 0)
    ref, w, _ = _sklearn_nmf(a, 3)
    np.testing.assert_allclose(f.token_factors[1:], w, rtol=1e-4, atol=1e-5)
    assert (f.token_factors[0] == 0).all() and f.positions.tolist() == list(range(1, expl.n_tokens))
    assert f.explained == pytest.approx(1 - np.sum((a - w @ ref.components_) ** 2) / np.sum(a ** 2), rel=1e-4)
    assert "first position" in f.excluded[0]
    assert f.n_neurons(0) == int((f.loadings[0] > 0.01 * f.loadings[0].max()).sum())


def test_output_tokens_take_the_activation_that_produced_them(expl):
    """The article: an input token shows the activation at its position; an output token the
    activation which produced it, so the last input and the first output token share a value."""
    values = np.arange(expl.n_tokens) * 10.0
    shown = expl.by_token(values)
    p = expl.n_prompt
    assert shown[:p].tolist() == values[:p].tolist()
    assert shown[p] == shown[p - 1] == values[p - 1]
    assert shown[p:].tolist() == values[p - 1:-1].tolist()


def test_single_layer_factors_and_pca(expl):
    from sklearn.decomposition import PCA

    f = expl.factors(3, layers=1)
    assert f.layers == [1] and f.loadings.shape == (3, 256)
    p = expl.factors(3, layers=1, method="pca", include_first=True)
    ref = PCA(n_components=3, random_state=0).fit(expl.activations[1])
    np.testing.assert_allclose(np.abs(p.loadings), np.abs(ref.components_), atol=1e-4)
    assert p.explained == pytest.approx(ref.explained_variance_ratio_.sum(), rel=1e-4)


def test_clusters_of_a_layer(expl):
    """The report's neuron clusters: a k-means partition of the layer's neurons (each nearest its own
    cluster's mean activation pattern), ordered cluster by cluster."""
    c = expl.clusters(5, layers=[1])
    x = expl.activations[1].T.astype(np.float64)
    x = x - x.mean(0)
    means = np.stack([x[c.labels == k].mean(0) for k in range(5)])
    np.testing.assert_array_equal(((x[:, None] - means[None]) ** 2).sum(-1).argmin(1), c.labels)
    assert (np.diff(c.labels[c.order]) >= 0).all()


@pytest.mark.parametrize("call,msg", [
    (lambda e: e.factors(500), "500 factors asked for, but 16 tokens allow"),
    (lambda e: e.factors(0), "0 factors"),
    (lambda e: e.factors(2, layers=7), "layer 7 is out of range: this model has layers 0 to 1"),
    (lambda e: e.factors(2, layers=[]), "selection is empty"),
    (lambda e: e.clusters(10000, layers=0), "10000 clusters"),
    (lambda e: e.layer_predictions(99), "position 99 is not an integer in 0..16"),
])
def test_analysis_errors(expl, call, msg):
    with pytest.raises(LensError, match=msg):
        call(expl)


def test_save_load_round_trip(expl, tmp_path):
    back = lens.Explanation.load(expl.save(tmp_path / "e.npz"))
    assert back == expl
    assert back != dataclasses.replace(expl, tokens=expl.tokens[:-1] + ["other"])
    assert back != dataclasses.replace(expl, ranks=expl.ranks + 1)
    with pytest.raises(LensError, match="was not watched"):
        back.watch(" never watched")


def test_compressed_round_trip(expl, tmp_path):
    back = lens.Explanation.load(expl.save(tmp_path / "e.npz", compress=True))
    for name in ("hidden_states", "activations"):
        a, b = getattr(expl, name), getattr(back, name)
        assert b.dtype == np.float16
        np.testing.assert_allclose(b.astype(np.float32), a, rtol=1e-3, atol=1e-3 * np.abs(a).max())
    assert back == dataclasses.replace(expl, hidden_states=back.hidden_states, activations=back.activations)


def test_newer_file_format_is_refused(expl, tmp_path):
    path = expl.save(tmp_path / "e.npz")
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta["format"] = 99
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(LensError, match="written by a newer lens .file format 99"):
        lens.Explanation.load(path)


def test_load_errors(tmp_path):
    with pytest.raises(LensError, match="does not exist"):
        lens.Explanation.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(LensError, match="not a lens explanation file"):
        lens.Explanation.load(tmp_path / "bad.npz")


def test_a_forced_continuation_equals_generating_it(tiny_explainer):
    """Forced decoding: explaining the tokens greedy decoding would produce gives the generation's
    own numbers (one full pass instead of KV-cached steps)."""
    gen = tiny_explainer.explain("William Shakespeare was born in the year", max_new_tokens=7,
                                 methods=("grad_x_input", "gradient"), watch=[" the"])
    cont = gen.token_ids[gen.n_prompt:].tolist()
    forced = tiny_explainer.explain("William Shakespeare was born in the year", continuation=cont,
                                    methods=("grad_x_input", "gradient"), watch=[" the"])
    np.testing.assert_array_equal(forced.token_ids, gen.token_ids)
    np.testing.assert_allclose(forced.probabilities, gen.probabilities, rtol=1e-4)
    for m in gen.attributions:
        np.testing.assert_allclose(forced.attributions[m], gen.attributions[m], atol=1e-6)
    np.testing.assert_array_equal(forced.rankings(), gen.rankings())
    np.testing.assert_array_equal(forced.watched[" the"], gen.watched[" the"])
    np.testing.assert_allclose(forced.activations, gen.activations, atol=1e-4)
    # as text: any continuation, not only the likely one, with each token's probability under the model
    text = tiny_explainer.explain("The capital of France is", continuation=" Paris, of course")
    assert text.generated_text == " Paris, of course" and text.n_generated == 4
    with pytest.raises(LensError, match="continuation must be non-empty"):
        tiny_explainer.explain("Hi", continuation="")
