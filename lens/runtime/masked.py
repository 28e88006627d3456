"""Masked passes: the probability of a token after a sequence with positions masked out of
attention, many masks at once, computing only what the masks leave (faithfulness)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import sampling


CALL_POSITIONS = 18  # one graph call costs about what 18 more token positions of a batch cost (SmolLM2: ~20 ms
                     # to stream the weights, ~1.1 ms a position)


def prefix_groups(starts: np.ndarray, kept_from: np.ndarray, call_cost: float) -> tuple[list[tuple[int, int]], float]:
    """Split rows, sorted by the position they may start from (`starts` [n]), into contiguous groups
    [lo, hi) run together from their first row's start; `kept_from[r, s]` is how many positions row r
    runs from position s on. A group costs `call_cost` plus its rows times its longest row. Returns
    the groups of least total cost (dynamic programming over the split points) and that cost."""
    n = len(starts)
    best, cut = [0.0] + [np.inf] * n, [0] * (n + 1)
    for lo in range(n):                                                  # best[lo] is final here
        longest = 0
        for hi in range(lo + 1, n + 1):
            longest = max(longest, int(kept_from[hi - 1, starts[lo]]))
            cost = best[lo] + call_cost + (hi - lo) * longest
            if cost < best[hi]:
                best[hi], cut[hi] = cost, lo
    groups, hi = [], n
    while hi:
        groups.append((cut[hi], hi))
        hi = cut[hi]
    return groups[::-1], best[n]


class Masking:
    """Masked passes of a `Model` (needs `session_run` and `_inputs`)."""
    session_run: Callable[..., dict]

    def masked_probabilities(self, token_ids, masks: np.ndarray, target: int, cache=None) -> np.ndarray:
        """p(target) after the last position of `token_ids` [L], once per row of `masks` [B, L] (1 = kept,
        0 = masked out of attention; positions unchanged), computing only what the masks leave:

        - a masked position is attended by no query, so it is left out of the pass (the others keep
          their position ids), except the last, whose output is read; a row masking everything is run
          whole (its last position attends uniformly to masked keys, not to nothing);
        - the positions before a row's first masked one compute what the unmasked sequence computes,
          so a group of rows starts from the unmasked sequence's cache there. `cache` is the
          `present` of an unmasked pass over a sequence beginning with `token_ids` (one pass serves
          every prefix); without it, one is run when it saves more than it costs.

        Rows are grouped (`prefix_groups`): one graph call per group, rows left-padded to the longest."""
        masks = np.asarray(masks, dtype=np.int64)
        ids = np.asarray(token_ids, np.int64)
        length = len(ids)
        masked = masks == 0
        keep = ~masked
        keep[:, -1] = True
        keep[masked.all(1)] = True
        if "position_ids" not in self._inputs:  # type: ignore[attr-defined]  # a graph numbering positions itself: run all
            keep[:] = True
        first = np.where(masked.any(1), masked.argmax(1), length - 1).clip(max=length - 1)
        order = np.argsort(first, kind="stable")
        kept_from = np.cumsum(keep[order, ::-1], 1)[:, ::-1]             # [B, L] positions run from s on
        groups, cost = prefix_groups(first[order], kept_from, CALL_POSITIONS)
        if cache is None and first[order[groups[-1][0]]] > 0:
            whole, whole_cost = prefix_groups(np.zeros(len(masks), int), kept_from, CALL_POSITIONS)
            if cost + CALL_POSITIONS + length < whole_cost:
                cache = self.session_run(ids, logits_from=-1)["present"]
            else:
                groups, first[:] = whole, 0
        probs = np.empty(len(masks))
        for lo, hi in groups:
            rows = order[lo:hi]
            start = int(first[rows[0]])
            cols = [start + np.flatnonzero(keep[r, start:]) for r in rows]
            width = max(len(c) for c in cols)
            step = np.zeros((len(rows), width), np.int64)
            positions = np.zeros((len(rows), width), np.int64)
            mask = np.zeros((len(rows), start + width), np.int64)
            mask[:, :start] = 1
            for i, (r, c) in enumerate(zip(rows, cols)):                 # left-padded: the last positions align
                step[i, width - len(c):], positions[i, width - len(c):] = ids[c], c
                mask[i, start + width - len(c):] = masks[r, c]
            past = None if start == 0 else [np.repeat(kv[:, :, :start], len(rows), axis=0) for kv in cache]
            logits = self.session_run(step, past, attention_mask=mask, position_ids=positions,
                                      logits_from=-1)["logits"][:, -1]
            probs[rows] = sampling.softmax(logits.astype(np.float64))[:, target]
        return probs
