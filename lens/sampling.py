"""Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p applied
as transformers' warpers apply them (tests compare against those warpers). Plain numpy."""
from __future__ import annotations

import numpy as np

from .errors import LensError


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (one distribution, or one per row)."""
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


MIN_TEMPERATURE = 1e-4  # below this a softmax of float32 logits overflows to one-hot anyway


def check(temperature, top_k, top_p) -> None:
    """The sampling bounds, for the API, the CLI, `lens serve` and `Model.generate` alike."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not MIN_TEMPERATURE <= temperature < float("inf"):
        raise LensError(f"temperature must be a finite number >= {MIN_TEMPERATURE}, not {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise LensError(f"top_k must be >= 1 (an integer), not {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise LensError(f"top_p must be in (0, 1], not {top_p!r}")


def distribution(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None) -> np.ndarray:
    """Temperature, then top-k, then nucleus (top-p) filtering, as transformers applies them."""
    z = logits / temperature
    if top_k is not None and top_k < len(z):
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    p = softmax(z)
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, kind="stable")
        cum = np.cumsum(p[order])
        keep = order[: int(np.searchsorted(cum, top_p) + 1)]  # smallest prefix reaching top_p
        mask = np.zeros_like(p, dtype=bool)
        mask[keep] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return p
