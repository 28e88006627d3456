"""Faithfulness of an attribution, measured on the model's own behaviour: remove the earlier
positions an attribution ranks highest (or lowest) from attention, 10 % more at each step, and read
how much the probability of the generated token falls (AOPC, the area over the perturbation curve;
Samek et al. 2017, DeYoung et al. 2020 (ERASER), Achtibat et al. 2024). A faithful ranking makes the
most-relevant-first curve fall fast (high AOPC) and the least-relevant-first curve stay flat (low).
The model calls are the runtime's; this module builds the masks and the areas."""
from __future__ import annotations

import numpy as np

STEPS = 9   # 10 % .. 90 % of the earlier positions removed (removing all leaves nothing to attend to)


def removal_masks(scores: np.ndarray, most_first: bool = True) -> np.ndarray:
    """[STEPS, p] attention masks over p positions: at step k the ceil(k/10 * p) positions ranked
    highest (or lowest) by `scores` [p] are 0."""
    p = len(scores)
    order = np.argsort(-scores if most_first else scores, kind="stable")
    masks = np.ones((STEPS, p), np.int64)
    for k in range(1, STEPS + 1):
        masks[k - 1, order[:int(np.ceil(k * p / 10))]] = 0
    return masks


def aopc(p0: float, curve: np.ndarray) -> float:
    """Mean drop of the probability over the removal steps."""
    return float(np.mean(p0 - np.asarray(curve)))


def random_scores(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(n)
