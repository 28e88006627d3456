"""Two explanations side by side: two methods on one run, two prompts, two models, or a run with and
without an intervention. The prompts' tokens are aligned (difflib's runs of equal tokens, and the
tokens that replace each other between them paired in order); generated tokens are paired by step
(the t-th of one continuation with the t-th of the other, whatever each says). Each pair's
attribution rows are compared over the input tokens both runs share."""
from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from ..errors import LensError


@dataclass
class Comparison:
    """What `Explanation.compare` returns (A: the explanation compared, B: the other)."""
    names: tuple[str, str]          # how each run is named in the views: model, method (and prompt if they differ)
    tokens: tuple[list, list]       # each run's tokens
    n_prompt: tuple[int, int]
    align: np.ndarray               # [n_a] B's position aligned with each of A's (-1: none)
    rows: np.ndarray                # [m] A's generated positions paired with a B generated position
    a_scores: np.ndarray            # [m, n_a] A's attribution row of each pair
    b_scores: np.ndarray            # [m, n_a] B's row of the pair, moved onto A's positions (0 where unaligned)
    b_own: np.ndarray               # [m, n_b] B's row of the pair on its own positions
    disagreement: np.ndarray        # [m] total variation between the two rows over shared inputs (0..1)
    same_token: np.ndarray          # [m] whether the paired generated tokens are the same text
    rankings: tuple[np.ndarray, np.ndarray]   # each run's [n_layers, n_gen] logit-lens ranks
    probabilities: tuple[np.ndarray, np.ndarray]

    def order(self) -> np.ndarray:
        """Indices of `rows`, the pairs that disagree most first."""
        return np.argsort(-self.disagreement, kind="stable")

    def to_dict(self) -> dict:
        a_tokens, b_tokens = self.tokens
        return {"names": list(self.names), "pairs": [
            {"position_a": int(r), "position_b": int(self.align[r]), "token_a": a_tokens[r],
             "token_b": b_tokens[self.align[r]], "disagreement": float(self.disagreement[i]),
             "scores_a": self.a_scores[i].tolist(), "scores_b_on_a": self.b_scores[i].tolist()}
            for i, r in ((i, self.rows[i]) for i in self.order())],
            "mean_disagreement": float(self.disagreement.mean()) if len(self.rows) else None}


def compare(a, b, method: str | None = None, other_method: str | None = None) -> Comparison:
    """Compare explanation `a`'s attribution under `method` (default: its first) with `b`'s under
    `other_method` (default: `method` if `b` has it, else `b`'s first)."""
    method = _method(a, method, "the first explanation")
    other_method = _method(b, other_method if other_method is not None else
                           (method if method in b.attributions else None), "the second explanation")
    align = align_runs(a.tokens, a.n_prompt, b.tokens, b.n_prompt)
    n_a = len(a.tokens)
    rows, a_rows, b_rows, b_own, same = [], [], [], [], []
    for i in range(a.n_prompt, n_a):
        j = int(align[i])
        if j < b.n_prompt:           # unaligned (-1), or aligned with a prompt token of B: no row to compare
            continue
        on_a = np.zeros(n_a)
        src = np.flatnonzero(align[:i] >= 0)
        own = np.asarray(b.attributions[other_method][j - b.n_prompt], np.float64)
        on_a[src] = own[align[src]]
        b_own.append(own)
        rows.append(i)
        a_rows.append(np.asarray(a.attributions[method][i - a.n_prompt], np.float64))
        b_rows.append(on_a)
        same.append(a.tokens[i] == b.tokens[j])
    a_scores = np.asarray(a_rows).reshape(len(rows), n_a)
    b_scores = np.asarray(b_rows).reshape(len(rows), n_a)
    shared = align >= 0
    disagreement = 0.5 * np.abs(_renorm(a_scores * shared) - _renorm(b_scores)).sum(1)
    names = _names(a, b, method, other_method)
    own = np.asarray(b_own).reshape(len(rows), len(b.tokens))
    return Comparison(names, (list(a.tokens), list(b.tokens)), (a.n_prompt, b.n_prompt), align,
                      np.asarray(rows, np.int64), a_scores, b_scores, own, disagreement, np.asarray(same, bool),
                      (a.rankings(), b.rankings()), (np.asarray(a.probabilities), np.asarray(b.probabilities)))


def align_tokens(a: list[str], b: list[str]) -> np.ndarray:
    """[len(a)] the position in `b` of each token of `a` (-1: none): the runs of equal tokens difflib
    finds, and between them the tokens that replace each other paired in order (two names in the same
    sentence, two models' different continuations)."""
    out = np.full(len(a), -1, np.int64)
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("equal", "replace"):
            k = min(i2 - i1, j2 - j1)
            out[i1:i1 + k] = np.arange(j1, j1 + k)
    return out


def align_runs(a: list[str], a_prompt: int, b: list[str], b_prompt: int) -> np.ndarray:
    """[len(a)] B's position of each of A's tokens (-1: none): the prompts by `align_tokens`, the
    generated tokens step by step."""
    out = np.full(len(a), -1, np.int64)
    out[:a_prompt] = align_tokens(a[:a_prompt], b[:b_prompt])
    steps = np.arange(min(len(a) - a_prompt, len(b) - b_prompt))
    out[a_prompt + steps] = b_prompt + steps
    return out


def _renorm(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(rows.sum(1, keepdims=True), 1e-30)


def _method(e, method, which: str) -> str:
    if not e.attributions:
        raise LensError(f"{which} has no attribution to compare")
    if method is None:
        return next(iter(e.attributions))
    if method not in e.attributions:
        raise LensError(f"{which} has no {method!r} attribution (it has {', '.join(e.attributions)})")
    return method


def _names(a, b, method: str, other_method: str) -> tuple[str, str]:
    parts_a, parts_b = [a.model_name], [b.model_name]
    if method != other_method or a.model_name == b.model_name:
        parts_a.append(method)
        parts_b.append(other_method)
    if a.prompt != b.prompt:
        parts_a.append(repr(a.prompt[:40]))
        parts_b.append(repr(b.prompt[:40]))
    return " · ".join(parts_a), " · ".join(parts_b)
