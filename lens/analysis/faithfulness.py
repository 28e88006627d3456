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


def beats_random(aopc: dict) -> list[str]:
    """The methods whose ranking beats the random control both ways: a higher AOPC removing the most
    relevant positions first and a lower one removing the least relevant first."""
    r = aopc.get("random")
    if not isinstance(r, dict):
        return []
    return [m for m, v in aopc.items() if m != "random" and isinstance(v, dict)
            and v["aopc_morf"] > r["aopc_morf"] and v["aopc_lerf"] < r["aopc_lerf"]]


def no_method_note(aopc: dict) -> str | None:
    """A plain warning when no attribution method beats the random ranking (None when one does, or
    when faithfulness was not measured)."""
    r = aopc.get("random")
    methods = [m for m in aopc if m != "random" and isinstance(aopc[m], dict)]
    if not isinstance(r, dict) or not methods or beats_random(aopc):
        return None
    scores = ", ".join(f"{m} {aopc[m]['aopc_morf']:.3f} / {aopc[m]['aopc_lerf']:.3f}" for m in methods)
    return (f"no attribution method beats a random ranking here (AOPC most-relevant-first / least-relevant-first: "
            f"{scores}; random {r['aopc_morf']:.3f} / {r['aopc_lerf']:.3f}): masking the tokens a saliency map "
            f"ranks highest hurts the output no more than masking random ones, so read these maps as unconfirmed")
