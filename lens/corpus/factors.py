"""NMF factors of a corpus's neuron activations, learnt one shard at a time.

`StreamingNMF` wraps scikit-learn's MiniBatchNMF (`partial_fit` per shard: the driver never holds
more than one shard's activations) and saves its state after every shard as plain arrays and
numbers, never a pickle, since an output folder is not trusted. `factor_values` then reads each
token's factor values with the learnt loadings fixed: a non-negative least-squares fit per token
that depends on that token alone (scikit-learn's `transform` starts from, and stops on, statistics
of the whole batch, so a token's values would change with the tokens batched beside it)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..files import savez_atomic

SWEEPS = 100   # coordinate-descent sweeps of the per-token fit (k unknowns each; converged well before)


def factor_values(acts: np.ndarray, loadings: np.ndarray, sweeps: int = SWEEPS) -> np.ndarray:
    """argmin_{w >= 0} |a - w H|^2 for each row a of acts [tokens, units] (negatives clipped first),
    H = loadings [k, units]: [tokens, k], by exact coordinate descent (HALS), row by row independent."""
    h = loadings.astype(np.float64)
    hh = h @ h.T                                                          # [k, k]
    ah = np.maximum(acts, 0).astype(np.float64) @ h.T                     # [tokens, k]
    w = np.zeros_like(ah)
    diag = np.maximum(np.diag(hh), 1e-30)
    for _ in range(sweeps):
        for j in range(len(hh)):
            w[:, j] = np.maximum(0.0, w[:, j] + (ah[:, j] - w @ hh[:, j]) / diag[j])
    return w.astype(np.float32)


class StreamingNMF:
    """MiniBatchNMF fed one shard at a time; `state/nmf.npz` keeps it between runs."""

    def __init__(self, state: Path, k: int, model=None, shards_done: int = 0):
        self.state, self.k, self.model, self.shards_done = state, k, model, shards_done

    @property
    def loadings(self) -> np.ndarray | None:
        """[k, units] each factor's weight on each neuron (None before any data)."""
        return None if self.model is None else self.model.components_.astype(np.float32)

    @classmethod
    def load(cls, state: Path, k: int) -> StreamingNMF:
        path = state / "nmf.npz"
        if not path.is_file():
            return cls(state, k)
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
        info = json.loads(str(arrays.pop("__info__")))
        model = None
        if info["fitted"]:
            from sklearn.decomposition import MiniBatchNMF
            model = MiniBatchNMF()
            model.__dict__.update(info["scalars"], **arrays)
        return cls(state, k, model, int(info["shards_done"]))

    def learn(self, rows: np.ndarray | None, shard: int) -> None:
        """One partial_fit on a shard's rows [tokens, units] (>= 0), then save: the shard counts as done."""
        if self.k and rows is not None and len(rows):
            from sklearn.decomposition import MiniBatchNMF
            if self.model is None:  # NNDSVD needs as many rows as factors; a tiny first shard starts at random
                self.model = MiniBatchNMF(n_components=self.k, init="nndsvda" if len(rows) >= self.k else "random",
                                          random_state=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model.partial_fit(rows.astype(np.float32))
        self.shards_done = shard + 1
        self.save()

    def save(self) -> None:
        """One file, replaced atomically: the shard count and the model can never disagree."""
        scalars, arrays = {}, {}
        for key, v in vars(self.model or object()).items():
            (arrays if isinstance(v, np.ndarray) else scalars)[key] = v
        info = dict(shards_done=self.shards_done, fitted=self.model is not None, scalars=scalars)
        savez_atomic(self.state / "nmf.npz", dict(arrays, __info__=np.array(json.dumps(info))))
