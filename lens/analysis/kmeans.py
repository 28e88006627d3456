"""k-means in numpy (k-means++ starts, Lloyd's iterations, the lowest-inertia of a few runs), without
importing scikit-learn and SciPy (~1 s in a fresh process) for the few dozen rows a report clusters.
Tested on its properties and against scikit-learn's partitions of separable data."""
from __future__ import annotations

import numpy as np


def plusplus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ (Arthur & Vassilvitskii 2007): each next centre a row drawn with probability
    proportional to its squared distance from the nearest centre so far. Returns [k, d]."""
    centres = [x[rng.integers(len(x))]]
    closest = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = closest.sum()
        row = int(rng.choice(len(x), p=closest / total)) if total > 0 else int(rng.integers(len(x)))
        centres.append(x[row])
        closest = np.minimum(closest, ((x - x[row]) ** 2).sum(1))
    return np.stack(centres)


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


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 4, max_iter: int = 300, tol: float = 1e-4) -> np.ndarray:
    """Cluster labels [n] of the rows of x [n, d]: the lowest-inertia of `n_init` runs."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)                                                # centred: distances are more accurate
    rng = np.random.default_rng(seed)
    tol = float(np.mean(np.var(x, axis=0))) * tol
    runs = [_lloyd(x, plusplus(x, k, rng), tol, max_iter) for _ in range(max(1, n_init))]
    return min(runs, key=lambda r: r[1])[0]
