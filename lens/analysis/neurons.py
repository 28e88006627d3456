"""MLP neuron activations factorised (NMF; PCA with scikit-learn) and clustered (k-means).

The activation matrix is tokens x neurons: rows are positions (input and generated), columns are
(layer, neuron) pairs of the selected layers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import LensError
from .kmeans import kmeans
from .nmf import nmf, nndsvda


def select_layers(n_layers: int, layers=None) -> list[int]:
    """None -> all; an int -> that layer; a (start, stop) pair or range/list -> those layers."""
    if layers is None:
        chosen = list(range(n_layers))
    elif isinstance(layers, (int, np.integer)):
        chosen = [int(layers)]
    elif isinstance(layers, tuple) and len(layers) == 2 and all(isinstance(v, (int, np.integer)) for v in layers):
        chosen = list(range(layers[0], layers[1] + 1))  # inclusive, as the CLI's A-B
    else:
        chosen = [int(l) for l in layers]
    if not chosen:
        raise LensError("the layer selection is empty")
    bad = [l for l in chosen if not 0 <= l < n_layers]
    if bad:
        raise LensError(f"layer {bad[0]} is out of range: this model has layers 0 to {n_layers - 1}")
    return chosen


def activation_matrix(activations: np.ndarray, layers: list[int], positions=None) -> np.ndarray:
    """[n_layers, n_tokens, d_mlp] -> [n_tokens (or len(positions)), len(layers) * d_mlp], float32,
    written in place layer by layer (no intermediate copies: 1.5 GB each for SmolLM2 at 8,000 tokens)."""
    rows = np.arange(activations.shape[1]) if positions is None else np.asarray(positions)
    d = activations.shape[2]
    out = np.empty((len(rows), len(layers) * d), np.float32)
    for i, l in enumerate(layers):
        out[:, i * d:(i + 1) * d] = activations[l][rows]
    return out


@dataclass
class Factors:
    """Token x factor activations and each factor's neuron loadings."""
    method: str
    layers: list[int]
    d_mlp: int
    token_factors: np.ndarray    # [n_tokens, k] how strongly each factor fires at each token (0 where left out)
    loadings: np.ndarray         # [k, len(layers) * d_mlp] each factor's weight on each neuron
    explained: float             # over the positions factorised: 1 - |A - WH|^2 / |A|^2 (NMF), or the
                                 # explained variance ratio (PCA)
    positions: np.ndarray        # [n_factorised] the token positions the factorisation saw
    excluded: dict = field(default_factory=dict)  # position -> why it was left out

    @property
    def k(self) -> int:
        return self.token_factors.shape[1]

    def neuron(self, column: int) -> tuple[int, int]:
        """(layer, neuron index) of a loadings column."""
        return self.layers[column // self.d_mlp], column % self.d_mlp

    def top_neurons(self, factor: int, n: int = 10) -> list[tuple[int, int, float]]:
        cols = np.argsort(-self.loadings[factor])[:n]
        return [(*self.neuron(int(c)), float(self.loadings[factor, c])) for c in cols]

    def n_neurons(self, factor: int, threshold: float = 0.01) -> int:
        """Neurons the factor loads on: loading above `threshold` of its largest loading."""
        row = self.loadings[factor]
        return int((row > threshold * max(float(row.max()), 1e-30)).sum())

    def dominant(self) -> np.ndarray:
        """[n_tokens] the factor that fires most at each token."""
        return self.token_factors.argmax(1)


NMF_TOL = 1e-3  # relative improvement that stops NMF: 1e-4 (scikit-learn's default) took 76 iterations on
                # SmolLM2's 43 x 46,080 activations for the same explained fraction to 1e-5; this takes 48


def _residual(a, w, h, rows: int = 512) -> float:
    """||a - w h||^2, a block of rows at a time (the whole product is a's size again)."""
    total = 0.0
    for r0 in range(0, len(a), rows):
        d = a[r0:r0 + rows] - w[r0:r0 + rows] @ h
        total += float(np.einsum("ij,ij->", d, d, dtype=np.float64))
    return total


def factorize(activations: np.ndarray, k: int, layers=None, method: str = "nmf", seed: int = 0,
              max_iter: int = 500, exclude: dict | None = None) -> Factors:
    """NMF (default, negatives clipped: GELU's small negative outputs; deterministic, from `nndsvda`,
    so `seed` is unused) or PCA (`seed`) into k factors, over the positions not in `exclude`
    ({position: reason}); excluded positions get zero factor values."""
    chosen = select_layers(activations.shape[0], layers)
    exclude = {int(p): r for p, r in (exclude or {}).items() if 0 <= int(p) < activations.shape[1]}
    positions = np.asarray([i for i in range(activations.shape[1]) if i not in exclude], np.int64)
    a = activation_matrix(activations, chosen, positions)
    n_tokens = a.shape[0]
    if not 1 <= k <= min(a.shape):
        raise LensError(f"{k} factors asked for, but {n_tokens} tokens allow 1 to {min(a.shape)}")
    if method == "nmf":
        np.maximum(a, 0, out=a)
        w, h, _ = nmf(a, *nndsvda(a, k), tol=NMF_TOL, max_iter=max_iter)
        explained = 1 - _residual(a, w, h) / max(float(np.einsum("ij,ij->", a, a, dtype=np.float64)), 1e-30)
    elif method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=k, random_state=seed)
        w, h = pca.fit_transform(a), pca.components_
        explained = float(pca.explained_variance_ratio_.sum())
    else:
        raise LensError(f"unknown factorisation {method!r}; choose nmf or pca")
    full = np.zeros((activations.shape[1], k), np.float32)
    full[positions] = w
    return Factors(method, chosen, activations.shape[2], full, h.astype(np.float32), explained, positions, exclude)


@dataclass
class Clusters:
    layers: list[int]
    d_mlp: int
    labels: np.ndarray           # [n_neurons] cluster of each selected neuron
    order: np.ndarray            # [n_neurons] neuron columns sorted by cluster (for the heatmap)


def cluster_neurons(activations: np.ndarray, k: int = 8, layers=None, seed: int = 0,
                    neurons: np.ndarray | None = None) -> Clusters:
    """k-means on neurons' activation patterns over the tokens (optionally a subset of columns)."""
    chosen = select_layers(activations.shape[0], layers)
    x = activation_matrix(activations, chosen).T                        # [n_neurons, n_tokens]
    if neurons is not None:
        x = x[neurons]
    if not 1 <= k <= x.shape[0]:
        raise LensError(f"{k} clusters asked for, but there are {x.shape[0]} neurons")
    labels = kmeans(x, k, seed=seed)
    return Clusters(chosen, activations.shape[2], labels, np.argsort(labels, kind="stable"))


@dataclass
class Heatmap:
    """A layer's most active neurons grouped by k-means cluster: what the report's heatmap draws."""
    layer: int
    n_clusters: int
    neurons: np.ndarray          # [n_neurons] neuron indices, in drawing order (cluster by cluster)
    clusters: np.ndarray         # [n_neurons] cluster of each drawn row
    values: np.ndarray           # [n_neurons, n_tokens] positive activations (negatives as 0)
    high: float                  # the colour scale's top: the 98th percentile past the first position


def neuron_heatmap(activations: np.ndarray, layer: int, n_neurons: int, clusters: int, seed: int = 0) -> Heatmap:
    """The `n_neurons` most positively active neurons of `layer` ([n_layers, n_tokens, d_mlp] in) in
    `clusters` k-means clusters of their activation patterns. The first position, where attention-sink
    neurons fire, neither picks the neurons nor sets the colour scale."""
    layer = select_layers(activations.shape[0], layer)[0]
    acts = activations[layer].astype(np.float32)                        # [n_tokens, d_mlp]
    rest = acts[1:] if len(acts) > 1 else acts
    n_neurons = int(min(max(1, n_neurons), acts.shape[1]))
    top = np.argsort(-np.maximum(rest, 0).sum(0), kind="stable")[:n_neurons]
    k = min(clusters, n_neurons)
    c = cluster_neurons(rest[None], k, layers=[0], seed=seed, neurons=top)
    order = top[c.order]
    high = float(max(np.percentile(np.maximum(rest[:, order], 0), 98), 1e-6))  # outliers saturate, not wash out
    return Heatmap(layer, k, order, c.labels[c.order], np.maximum(acts[:, order].T, 0), high)
