"""Attribution methods: one class each, registered by name (inseq's way). Settings, the CLI's
choices, the report's method menu, faithfulness and corpus mode all read this registry; the engine
(`lens.grad`) runs any method through the same one-forward, vmapped-VJP computation and asks the
method how to sample its inputs (a path from a baseline, or the input itself), which backward rules
to use, and how to turn gradients into scores. A new method is one class here (or in a user's file,
with `register`) plus its tests.

A method sees, for every generated token t and position p, the gradient g[t, p] ([d_model]) of the
score it explains (the token's logit or probability) and the input minus its baseline delta[p]; it
returns unnormalised non-negative scores [n_gen, n] and, where a sum means something, signed sums.
The engine masks positions a token cannot see and normalises each row to sum 1."""
from __future__ import annotations

import numpy as np

from .errors import LensError

TARGETS = ("logit", "probability")
REGISTRY: dict[str, Method] = {}


class Method:
    name = ""
    description = ""
    rules = "gradient"           # the backward rules (`lens.families.rules`): "gradient" or "attnlrp"
    targets: tuple[str, ...] = TARGETS  # the scores it can explain
    needs_foil = False           # explains score(token) - score(foil)
    path_integral = False        # gradients averaged over a path from a baseline (integrated gradients)
    batchable = True             # corpus mode runs it on many sequences in one call (not with one foil each)

    def check(self, target: str) -> None:
        if target not in self.targets:
            raise LensError(f"{self.name} explains the {' or '.join(self.targets)}: use --target "
                            f"{self.targets[0]} with it")

    def score(self, grads: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """grads [n_gen, n, d], delta [n, d] -> (scores [n_gen, n] >= 0, signed [n_gen, n] or None)."""
        raise NotImplementedError

    def __repr__(self):
        return f"<attribution method {self.name}>"


def register(cls: type[Method]) -> type[Method]:
    """Add a method class to the registry under its `name` (a decorator)."""
    if not cls.name or not cls.name.isidentifier():
        raise LensError(f"a method needs a name that is an identifier, not {cls.name!r}")
    REGISTRY[cls.name] = cls()
    return cls


def get(name: str) -> Method:
    if not isinstance(name, str) or name not in REGISTRY:
        raise LensError(f"unknown attribution method {name!r}; choose from {', '.join(REGISTRY)}")
    return REGISTRY[name]


def names(batchable: bool = False) -> tuple[str, ...]:
    return tuple(n for n, m in REGISTRY.items() if m.batchable or not batchable)


@register
class GradXInput(Method):
    name = "grad_x_input"
    description = "|gradient x input|_2 per position (Alammar 2020); signed: sum over the embedding"

    def score(self, grads, delta):
        gxi = grads * delta[None]                                           # [n_gen, n, d]
        return np.linalg.norm(gxi, axis=-1), gxi.sum(-1).astype(np.float32)


@register
class Gradient(Method):
    name = "gradient"
    description = "|gradient|_2 per position"

    def score(self, grads, delta):
        return np.linalg.norm(grads, axis=-1), None


@register
class IntegratedGradients(GradXInput):
    name = "integrated_gradients"
    description = ("(x - x') times the mean gradient along the path from a baseline x' (Gauss-Legendre); "
                   "signed sums to f(x) - f(x')")
    path_integral = True


@register
class Contrastive(GradXInput):
    name = "contrastive"
    description = "grad_x_input of score(token) - score(foil)"
    needs_foil = True
    batchable = False


@register
class AttnLRP(Method):
    name = "attnlrp"
    description = "AttnLRP (Achtibat et al., ICML 2024): gradient x input through LRP's backward rules"
    rules = "attnlrp"
    targets = ("logit",)

    def score(self, grads, delta):  # relevance is the signed sum over the embedding; its size is the score
        signed = np.einsum("tnd,nd->tn", grads, delta).astype(np.float32)
        return np.abs(signed), signed
