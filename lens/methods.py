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
    uses_attention = False       # scored from attention probabilities (`AttentionMethod`), not gradients

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


# ---------------------------------------------------------------- attention-based (Abnar & Zuidema, ACL 2020)
class AttentionMethod(Method):
    """Scores from the attention probabilities alone, no gradient: each layer's mean over heads
    mixed with the residual connection, A_l = 0.5 * mean_heads(attention_l) + 0.5 * I (rows sum to 1);
    generated token t (at position t) gets the row of position t - 1, the one that predicts it."""
    uses_attention = True
    targets = TARGETS  # no score is differentiated: any target gives the same rows
    description = ""

    def score_attention(self, attention: np.ndarray, n_prompt: int) -> np.ndarray:
        """attention [L, n, n] (each layer's mean over heads) -> scores [n - n_prompt, n], rows sum 1."""
        raise NotImplementedError

    def score(self, grads, delta):
        raise LensError(f"{self.name} is computed from attention, not gradients")


def residual_attention(attention: np.ndarray) -> np.ndarray:
    """[L, n, n] mean attention -> A_l = 0.5 * attention_l + 0.5 * I, float64."""
    n = attention.shape[-1]
    return 0.5 * np.asarray(attention, np.float64) + 0.5 * np.eye(n)


@register
class AttentionRollout(AttentionMethod):
    name = "attention_rollout"
    description = ("attention rollout (Abnar & Zuidema 2020): A_L ... A_1 of the head-mean attention mixed "
                   "with the residual; compounds the attention sink")

    def score_attention(self, attention, n_prompt):
        rolled = np.eye(attention.shape[-1])
        for a in residual_attention(attention):                               # layer 1 first
            rolled = a @ rolled                                               # A_l @ ... @ A_1
        rows = np.tril(rolled)[n_prompt - 1:-1]                               # [n_gen, n]: position t - 1
        return rows / rows.sum(1, keepdims=True)


# capacities are scaled to integers for scipy's max-flow: 2^30 keeps every flow (at most the source's
# outgoing capacity, a row summing to 1) within int32, and each capacity within 1e-9
FLOW_SCALE = 1 << 30


@register
class AttentionFlow(AttentionMethod):
    name = "attention_flow"
    description = ("attention flow (Abnar & Zuidema 2020): the maximum flow from the predicting position "
                   "to each input through the layers' head-mean attention mixed with the residual")

    def score_attention(self, attention, n_prompt):
        a = residual_attention(attention)                                     # [L, n, n]
        n = a.shape[-1]
        out = np.zeros((n - n_prompt, n))
        for t in range(n_prompt, n):
            out[t - n_prompt, :t] = max_flows(a, t - 1)
        return out / out.sum(1, keepdims=True)


def max_flows(a: np.ndarray, q: int) -> np.ndarray:
    """[q + 1] the maximum flow from node (L, q) to each input node (0, k), k <= q, in the layered graph
    whose edge (l, i) -> (l - 1, j), j <= i, has capacity a[l - 1, i, j] (scipy's Dinic, on capacities
    scaled to integers by FLOW_SCALE). A path only visits positions k..q (edges never go forward), so
    input k's graph holds those positions only."""
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import maximum_flow

    n_layers = a.shape[0]
    caps = np.rint(a * FLOW_SCALE).astype(np.int64)
    out = np.zeros(q + 1)
    for k in range(q + 1):
        m = q - k + 1                                                         # positions k..q
        sub = np.tril(caps[:, k:q + 1, k:q + 1])                             # [L, m, m]
        layer, i, j = np.nonzero(sub)
        graph = csr_array((sub[layer, i, j].astype(np.int32), ((layer + 1) * m + i, layer * m + j)),
                          shape=((n_layers + 1) * m,) * 2)
        out[k] = maximum_flow(graph, n_layers * m + m - 1, 0, method="dinic").flow_value / FLOW_SCALE
    return out
