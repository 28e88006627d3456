"""k-means in numpy: scikit-learn's KMeans (greedy k-means++ start, Lloyd's iterations, the best of
`n_init` runs) with its random draws in its order, so the same seed gives scikit-learn's clusters,
without importing scikit-learn and SciPy (~1 s in a fresh process) for a few dozen rows."""
from __future__ import annotations

import numpy as np


def _squared_distances(a: np.ndarray, b: np.ndarray, b_norms: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] squared Euclidean distances, as scikit-learn computes them: in float64 (b's
    norms given), the result in a's dtype (k-means++ picks by cumulative sums of these, so a last
    bit can change a pick)."""
    a64 = a.astype(np.float64)
    d = np.einsum("ij,ij->i", a64, a64)[:, None] - 2 * a64 @ b.astype(np.float64).T + b_norms[None]
    return np.maximum(d, 0).astype(a.dtype)


def kmeans_plusplus(x: np.ndarray, k: int, rng: np.random.RandomState, norms: np.ndarray) -> np.ndarray:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007; 2 + log k candidates a centre, the one that
    lowers the potential most kept). Returns the [k, d] starting centres, rows of x."""
    n = x.shape[0]
    trials = 2 + int(np.log(k))
    centres = np.empty((k, x.shape[1]), x.dtype)
    first = rng.choice(n, p=np.full(n, 1.0 / n))
    centres[0] = x[first]
    closest = _squared_distances(x[first:first + 1], x, norms)[0]    # [n]
    ones = np.ones(n, x.dtype)                                       # sums as scikit-learn's weighted ones
    potential = closest @ ones
    for c in range(1, k):
        picks = np.searchsorted(np.cumsum(ones * closest), rng.uniform(size=trials) * potential)
        picks = np.minimum(picks, n - 1)
        candidates = np.minimum(closest, _squared_distances(x[picks], x, norms))  # [trials, n]
        sums = candidates @ ones[:, None]                            # [trials, 1]
        best = int(np.argmin(sums))
        potential, closest = sums[best], candidates[best]
        centres[c] = x[picks[best]]
    return centres


def _assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Nearest centre of each row (|c|^2 - 2 x.c: the row's own norm does not change the argmin)."""
    return np.argmin((centres * centres).sum(1)[None] - 2 * x @ centres.T, axis=1).astype(np.int32)


def _centres(x: np.ndarray, labels: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Each cluster's mean; an empty cluster takes the row farthest from its centre (scikit-learn's rule)."""
    k = old.shape[0]
    counts = np.bincount(labels, minlength=k).astype(x.dtype)
    sums = (labels[None] == np.arange(k)[:, None]).astype(x.dtype) @ x  # [k, d] (one BLAS call, not np.add.at)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        far = np.argsort(-((x - old[labels]) ** 2).sum(1), kind="stable")[:len(empty)]
        for cluster, row in zip(empty, far):
            sums[labels[row]] -= x[row]
            counts[labels[row]] -= 1
            sums[cluster], counts[cluster] = x[row], 1
    return sums / np.maximum(counts, 1)[:, None]


def _lloyd(x: np.ndarray, centres: np.ndarray, tol: float, max_iter: int):
    labels = np.full(x.shape[0], -1, np.int32)
    converged = False
    for _ in range(max_iter):
        new_labels = _assign(x, centres)
        new = _centres(x, new_labels, centres)
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if np.array_equal(new_labels, labels):
            labels, converged = new_labels, True
            break
        labels = new_labels
        if shift <= tol:
            break
    if not converged:                                                # labels that match the final centres
        labels = _assign(x, centres)
    inertia = float(((x - centres[labels]) ** 2).sum())
    return labels, inertia


def _same_clustering(a: np.ndarray, b: np.ndarray) -> bool:
    """The same partition up to renaming the clusters."""
    pairs = np.unique(np.stack([a, b]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1]


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 4, max_iter: int = 300, tol: float = 1e-4) -> np.ndarray:
    """Cluster labels [n] of the rows of x [n, d]: the lowest-inertia of `n_init` runs."""
    x = np.asarray(x)
    x = x - x.mean(0)                                                # centred: distances are more accurate
    x64 = x.astype(np.float64)
    norms = np.einsum("ij,ij->i", x64, x64)                          # float64, as scikit-learn's distances
    rng = np.random.RandomState(seed)
    tol = float(np.mean(np.var(x, axis=0))) * tol
    best, best_inertia = None, None
    for _ in range(n_init):
        labels, inertia = _lloyd(x, kmeans_plusplus(x, k, rng, norms), tol, max_iter)
        if best is None or (inertia < best_inertia and not _same_clustering(labels, best)):
            best, best_inertia = labels, inertia
    assert best is not None  # n_init >= 1
    return best
