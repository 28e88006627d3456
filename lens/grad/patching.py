"""Activation patching and attribution patching on the JAX port.

Activation patching (TransformerLens's `patching.get_act_patch_*` definitions): run the corrupted
prompt X with one activation replaced by its value on the clean prompt C, and report
`(m(X patched from C) - m(X)) / (m(C) - m(X))` with `m = logit(answer) - logit(foil)` at the last
position: 1 where the patched activation alone restores the clean answer, 0 where it does nothing.
  resid_pre  each (layer, position): blocks.L.hook_resid_pre
  z          each (layer, head), every position: blocks.L.attn.hook_z
  mlp_post   each (layer, position): blocks.L.mlp.hook_post
Every run of a layer starts from the corrupted run's cached residual stream entering that layer (the
layers before it are the same in every such run) and the runs of a layer go through as one batch.

Attribution patching (Nanda 2023) estimates every entry at once, to first order, from one forward and
one backward pass of the corrupted run: (a(C) - a(X)) . dm/da at X, normalised the same way.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..errors import LensError
from ..families import decoder
from .engine import jax_precision

KINDS = ("resid_pre", "z", "mlp_post")
HOOK_OF = {"resid_pre": "blocks.{l}.hook_resid_pre", "z": "blocks.{l}.attn.hook_z",
           "mlp_post": "blocks.{l}.mlp.hook_post"}
UNIT = {"resid_pre": "position", "z": "head", "mlp_post": "position"}


@dataclass
class Patching:
    """The numbers of one clean/corrupted pair: each kind's exact heatmap [n_layers, positions or
    heads] and its attribution-patching estimate."""
    clean_metric: float                  # m(C) = logit(answer) - logit(foil) on the clean prompt
    corrupted_metric: float              # m(X)
    exact: dict[str, np.ndarray]         # kind -> [L, units] normalised patching effect
    estimate: dict[str, np.ndarray]      # kind -> [L, units] attribution patching's first-order estimate
    runs: int = 0                        # forward passes the exact heatmaps took
    timings: dict = field(default_factory=dict)
    model_name: str = ""
    clean_tokens: list = field(default_factory=list)       # display text of each prompt's tokens
    corrupted_tokens: list = field(default_factory=list)
    answer: str = ""
    foil: str = ""

    def to_dict(self) -> dict:
        """Every number, as JSON-ready lists."""
        return dict(model=self.model_name, clean_tokens=self.clean_tokens, corrupted_tokens=self.corrupted_tokens,
                    answer=self.answer, foil=self.foil, clean_metric=self.clean_metric,
                    corrupted_metric=self.corrupted_metric, runs=self.runs, timings=self.timings,
                    hooks={k: HOOK_OF[k] for k in self.exact}, units={k: UNIT[k] for k in self.exact},
                    exact={k: v.tolist() for k, v in self.exact.items()},
                    attribution_patching={k: v.tolist() for k, v in self.estimate.items()},
                    agreement={k: self.agreement(k) for k in self.exact})

    def summary(self) -> str:
        """A few lines: the metric on both prompts and each kind's strongest entry."""
        lines = [f"logit({self.answer!r}) - logit({self.foil!r}): clean {self.clean_metric:.3f}, corrupted "
                 f"{self.corrupted_metric:.3f} ({self.runs} patched runs)"]
        for k, v in self.exact.items():
            layer, unit = np.unravel_index(int(np.abs(v).argmax()), v.shape)
            where = (f"head {unit}" if k == "z" else
                     f"position {unit} {self.corrupted_tokens[unit]!r}" if unit < len(self.corrupted_tokens) else f"{unit}")
            a = self.agreement(k)
            lines.append(f"  {HOOK_OF[k].format(l='L')}: strongest layer {layer}, {where}: {v[layer, unit]:+.3f}; "
                         f"attribution patching r = {a['pearson_r']:.2f}")
        return "\n".join(lines)

    def agreement(self, kind: str) -> dict:
        """How well attribution patching matches the exact numbers: Pearson r and the largest gap."""
        a, b = self.exact[kind].ravel(), self.estimate[kind].ravel()
        r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
        return {"pearson_r": r, "max_abs_difference": float(np.abs(a - b).max())}


def _metric(h, params, arch, answer, foil):  # [n, d] normed final hidden states -> logit(answer) - logit(foil)
    z = decoder.logits(h[-1:], params, arch)[0]                                  # [V]
    return z[answer] - z[foil]


@functools.cache
def _functions(arch):
    """Jitted pieces for one architecture: the cached run, the patched tails, the metric's gradients."""
    import jax
    import jax.numpy as jnp

    def cached(params, x, answer, foil):  # [n, d] -> (metric, {kind: [L, n, w]})
        h, cache = decoder.run_with_cache(x, params, arch)
        return _metric(h, params, arch, answer, foil), cache

    def tails(params, start, xs, edit, answer, foil):  # xs [B, n, d] entering layer `start` -> metric [B]
        def one(x, e):
            return _metric(decoder.run_from(x, params, arch, start, e), params, arch, answer, foil)
        return jax.vmap(one)(xs, edit)

    def gradients(params, x, answer, foil, zeros):  # d metric / d (every hook's value) on this run
        def m(adds):
            edits = {k: (jnp.ones_like(a), a) for k, a in adds.items()}
            h = decoder.final_hidden(x, decoder.with_edits(params, edits), arch)
            return _metric(h, params, arch, answer, foil)
        return jax.grad(m)(zeros)

    return jax.jit(cached), jax.jit(tails), jax.jit(gradients)


def activation_patching(attributor, clean_ids, corrupted_ids, answer: int, foil: int, kinds=KINDS) -> Patching:
    """Patch every (layer, position) of the residual stream and the MLP neurons and every (layer, head)
    of the corrupted run from the clean run (`attributor`: a `lens.grad.Attributor`, the weights on
    JAX's device), and the attribution-patching estimate of each."""
    import time

    clean, corrupt = np.asarray(clean_ids, np.int64), np.asarray(corrupted_ids, np.int64)
    arch = attributor.arch
    if clean.shape != corrupt.shape:
        raise LensError(f"the clean prompt has {len(clean)} tokens and the corrupted one {len(corrupt)}: patching "
                        f"needs prompts of the same length in tokens")
    if not 1 <= len(clean) <= arch.n_ctx:
        raise LensError(f"patching needs 1 to {arch.n_ctx} tokens, not {len(clean)}")
    for what, t in (("answer", answer), ("foil", foil)):
        if not 0 <= int(t) < arch.d_vocab:
            raise LensError(f"the {what} token id {t} is not in the vocabulary (0..{arch.d_vocab - 1})")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise LensError(f"cannot patch {unknown[0]!r}; choose from {', '.join(KINDS)}")
    cached, tails, gradients = _functions(arch)
    params, wte = attributor.params, attributor.wte
    timings = {}
    t0 = time.perf_counter()
    with jax_precision():
        m_c, cache_c = cached(params, wte[clean], int(answer), int(foil))
        m_x, cache_x = cached(params, wte[corrupt], int(answer), int(foil))
        m_c, m_x = float(m_c), float(m_x)
        if not abs(m_c - m_x) > 1e-6 * max(1.0, abs(m_c)):
            raise LensError(f"the clean and corrupted prompts give the same logit difference ({m_c:.4g}): nothing for "
                            f"patching to restore; pick prompts whose answers differ")
        c = {k: np.asarray(v) for k, v in cache_c.items()}
        x = {k: np.asarray(v) for k, v in cache_x.items()}
        denom = m_c - m_x
        exact, runs = {}, 0
        n, L = len(clean), arch.n_layers
        for kind in kinds:
            out = np.zeros((L, arch.n_heads if kind == "z" else n), np.float32)
            units = out.shape[1]
            chunk = min(units, runs_per_call(arch, n))     # one compiled shape: the last chunk is padded
            for layer in range(L):
                for u0 in range(0, units, chunk):
                    which = np.minimum(np.arange(u0, u0 + chunk), units - 1)
                    xs, edit = _batch(kind, x["resid_pre"][layer], c[kind][layer], arch, which)
                    got = np.asarray(tails(params, layer, xs, edit, int(answer), int(foil)))
                    out[layer, u0:u0 + chunk] = got[:min(chunk, units - u0)]
                runs += units
            exact[kind] = (out - m_x) / denom
        timings["activation_patching"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        zeros = {k: np.zeros_like(x[k]) for k in KINDS}
        g = {k: np.asarray(v) for k, v in gradients(params, wte[corrupt], int(answer), int(foil), zeros).items()}
        timings["attribution_patching"] = time.perf_counter() - t0
    estimate = {}
    for kind in kinds:
        prod = (c[kind] - x[kind]) * g[kind]                                      # [L, n, w]
        if kind == "z":                                                           # a head: its d_head values, all positions
            prod = prod.reshape(L, n, arch.n_heads, arch.d_head).sum((1, 3))
        else:
            prod = prod.sum(-1)
        estimate[kind] = (prod / denom).astype(np.float32)
    return Patching(m_c, m_x, exact, estimate, runs, timings)


PATCH_MEMORY = 512 << 20  # bytes one batch of patched runs may take (a long prompt's runs go in several)


def runs_per_call(arch, n: int) -> int:
    """Patched runs of n positions batched in one call: what a run holds (its input and edit, and the
    forward's vectors and attention maps of one layer at a time) within PATCH_MEMORY."""
    per_run = 4 * n * (9 * arch.d_model + 6 * arch.d_mlp + 3 * arch.n_heads * n)
    return max(1, PATCH_MEMORY // per_run)


def _batch(kind: str, resid: np.ndarray, clean: np.ndarray, arch, which: np.ndarray):
    """Runs of one layer: (residual streams entering the layer [B, n, d], the edit at the layer
    {kind: (scale, add) [B, n, w]}), run b patching position (resid_pre, mlp_post) or head (z) which[b]."""
    n, B = resid.shape[0], len(which)
    rows = np.arange(B)
    if kind == "resid_pre":                     # the patch is the layer's input itself
        xs = np.repeat(resid[None], B, 0)
        xs[rows, which] = clean[which]
        return xs, {}
    w = clean.shape[-1]
    scale = np.ones((B, n, w), np.float32)
    add = np.zeros((B, n, w), np.float32)
    if kind == "mlp_post":
        scale[rows, which] = 0
        add[rows, which] = clean[which]
    else:                                       # a head's d_head values at every position
        dh = arch.d_head
        for b, h in enumerate(which):
            cols = slice(h * dh, (h + 1) * dh)
            scale[b, :, cols] = 0
            add[b, :, cols] = clean[:, cols]
    return np.repeat(resid[None], B, 0), {kind: (scale, add)}
