"""Exact per-unit top-k over a corpus, merged from partial results.

A unit is a neuron (or a factor); a candidate is one token: (activation, example, position). Order:
strongest first, ties broken by example then position, so the result is unique and equals brute
force over all tokens, whatever the order partial results are merged in."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TopK:
    values: np.ndarray      # [units, k] float32, strongest first (-inf where fewer than k tokens exist)
    examples: np.ndarray    # [units, k] int64 (-1 where empty)
    positions: np.ndarray   # [units, k] int64 (-1 where empty)

    @classmethod
    def empty(cls, units: int, k: int) -> TopK:
        return cls(np.full((units, k), -np.inf, np.float32), np.full((units, k), -1, np.int64),
                   np.full((units, k), -1, np.int64))

    @property
    def k(self) -> int:
        return self.values.shape[1]

    def merge(self, other: TopK) -> TopK:
        """The top-k of both candidate sets."""
        v = np.concatenate([self.values, other.values], 1)
        e = np.concatenate([self.examples, other.examples], 1)
        p = np.concatenate([self.positions, other.positions], 1)
        order = np.lexsort((p, e, -v), axis=1)[:, :self.k]
        take = lambda a: np.take_along_axis(a, order, 1)  # noqa: E731
        return TopK(take(v), take(e), take(p))

    def to_dict(self) -> dict:
        return dict(values=self.values, examples=self.examples, positions=self.positions)


def of_tokens(acts: np.ndarray, examples: np.ndarray, positions: np.ndarray, k: int) -> TopK:
    """Top-k of each unit over tokens: acts [tokens, units], the tokens ordered by (example, position)."""
    v = np.ascontiguousarray(acts.T, np.float32)                      # [units, tokens]
    units, n = v.shape
    if n <= k:
        order = np.argsort(-v, axis=1, kind="stable")
    else:
        part = np.argpartition(-v, k - 1, axis=1)[:, :k]              # the k largest, ties at the edge arbitrary
        kth = np.take_along_axis(v, part, 1).min(1)
        tied = np.flatnonzero((v >= kth[:, None]).sum(1) > k)          # more than k candidates reach the edge
        if len(tied):                                                  # rare: settle those units exactly
            part[tied] = np.argsort(-v[tied], axis=1, kind="stable")[:, :k]
        chosen = np.take_along_axis(v, part, 1)
        order = np.take_along_axis(part, np.lexsort((part, -chosen), axis=1), 1)
    out = TopK.empty(units, k)
    m = order.shape[1]
    out.values[:, :m] = np.take_along_axis(v, order, 1)
    out.examples[:, :m] = np.asarray(examples, np.int64)[order]
    out.positions[:, :m] = np.asarray(positions, np.int64)[order]
    return out
