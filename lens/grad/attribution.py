"""Input attribution for every generated token in one batched pass.

For a sequence of n_prompt + n_generated tokens, generated token t sits at position n_prompt + t and
is scored at position n_prompt + t - 1. One forward pass over the (bucketed) sequence, then one
vector-Jacobian product vmapped over identity cotangents gives the gradients of all selected scores
at once, instead of a forward and backward per token. Targets are processed in chunks: each chunk
runs on the prefix it needs (causality: token t never looks past its position) and the chunk size
bounds memory. Shapes are bucketed so a process compiles once per bucket, and compiled code is kept
in a persistent cache across processes.

The methods (`lens.methods`: one class each) share this computation; a method chooses the backward
rules, whether gradients are averaged along a path from a baseline (integrated gradients: Gauss-
Legendre; the baseline is one embedding at every position, the first position keeping its own, as it
is the attention sink), and how gradients become scores.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import families
from ..errors import LensError
from ..families import decoder
from ..families.rules import RULES
from ..methods import TARGETS, Method
from ..settings import check_attention_size
from ..methods import get as get_method
from ..store import ModelFolder
from ..families.decoder import Memory
from .engine import (BATCH_ROWS, DEFAULT_MEMORY_BUDGET, ROW_BUCKET, SEQ_BUCKET, STEP_CHUNK, Chunk, _bucket,
                     _compiled, _pad_rows, _pad_to, _path, enable_compilation_cache, in_place, jax_precision,
                     memory_plan)


@dataclass
class Attribution:
    """Scores for every generated token (rows) over every position of the sequence (columns)."""
    method: str
    target: str
    scores: np.ndarray                 # [n_generated, n_tokens], each row >= 0 and sums to 1
    signed: np.ndarray | None          # [n_generated, n_tokens], sum over the embedding, unnormalised
    target_values: np.ndarray          # [n_generated] the differentiated score at the real input
    baseline_values: np.ndarray | None = None  # [n_generated] at the baseline (integrated gradients)
    settings: dict = field(default_factory=dict)

    def completeness_error(self) -> np.ndarray:
        """|sum(signed) - (f(x) - f(x'))| / |f(x) - f(x')| per token (integrated gradients)."""
        if self.baseline_values is None or self.signed is None:
            raise LensError("completeness applies to integrated_gradients only")
        delta = self.target_values - self.baseline_values
        return np.abs(self.signed.sum(1) - delta) / np.maximum(np.abs(delta), 1e-12)


class Attributor:
    """Gradient-based attributions on a model's exported weights (JAX; GPU when jax sees one)."""

    def __init__(self, folder: ModelFolder | str | os.PathLike, memory_budget_bytes: int | None = None):
        import jax

        enable_compilation_cache()
        folder = folder if isinstance(folder, ModelFolder) else ModelFolder(folder)
        self.arch, params = families.load(folder.config, folder.weights())
        a = self.arch
        self.n_layers, self.d_model, self.n_ctx, self.n_head, self.d_mlp = a.n_layers, a.d_model, a.n_ctx, a.n_heads, a.d_mlp
        self.wte = np.asarray(decoder.embedding(params))              # [d_vocab, d_model] input embeddings
        self.params = jax.device_put(params)
        if not in_place(params, self.params):
            # JAX holds its own copies (a GPU, an older export's layout): drop the mapped file pages
            # they were read from (pages still needed fault back in from the page cache), so the
            # process does not count them twice
            folder.release_weight_pages()
        self.memory_budget = memory_budget_bytes or int(os.environ.get("LENS_GRAD_MEMORY", DEFAULT_MEMORY_BUDGET))
        self._patterns: Any = None  # the jitted attention forward, built at first use
        self._factor_grads: dict = {}  # the jitted factor-saliency VJPs, by (layers, memory plan)
        self._heads: Any = None  # the jitted per-head attention forward, built at first use

    @property
    def unembedding(self):
        """[d_vocab, d_model] output embedding as a JAX array (the logit lens can share it)."""
        return decoder.unembedding(self.params)

    def memory_plan(self, seq_len: int) -> tuple[int, Memory]:
        """(target rows whose backward passes fit the memory budget together, what the forward keeps);
        a LensError when not even one row fits: call it before any slow work."""
        return memory_plan(self.memory_budget, self.n_layers, self.d_model, self.d_mlp, self.n_head,
                           _bucket(seq_len, SEQ_BUCKET, self.n_ctx))

    def rows_per_chunk(self, seq_len: int) -> int:
        """Target rows whose backward passes fit the memory budget together."""
        return self.memory_plan(seq_len)[0]

    def attribute(self, token_ids, n_prompt: int, method: str = "grad_x_input", target: str = "logit",
                  foils=None, steps: int = 16, baseline: str | int | np.ndarray | None = None,
                  keep_first: bool = True, rows_per_chunk: int | None = None, progress=None,
                  interventions=None) -> Attribution:
        """Attribute every generated token (positions n_prompt.. of token_ids) to all earlier tokens.

        `interventions` (`lens.interventions`): the gradients are the intervened model's (the edits are
        part of the forward, as in PyTorch under the same forward hooks).

        Integrated gradients' `baseline`: "zero" (None), "mean" (the vocabulary's mean embedding), a
        token id, or a [tokens, d_model] array (used as given); `keep_first` keeps the first position's
        real embedding in the others, so that position gets no attribution."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        m = self._check(ids, n_prompt, method, target, steps)
        edits = self.edits(interventions, len(ids))
        if m.uses_attention:
            return self._from_attention(ids, n_prompt, m, target, edits)
        n_gen = len(ids) - n_prompt
        foil_ids = self._foils(foils, n_gen) if m.needs_foil else np.zeros(n_gen, np.int64)
        x = self.wte[ids]                                                   # [n, d] token embeddings
        base = self.baseline(x, baseline, keep_first) if m.path_integral else np.zeros_like(x)
        chunks = self.plan(len(ids), n_prompt, rows_per_chunk)
        path, settings = _path_and_settings(m, steps, baseline, keep_first, foil_ids if m.needs_foil else None)
        grads, values, base_values = self._run(chunks, ids, n_prompt, x, base, foil_ids, target, m, path, progress,
                                               edits)
        scores, signed = _score(m, grads, x - base, n_prompt)
        return Attribution(method, target, scores, signed, values, base_values, settings)

    def attribute_batch(self, sequences, method: str = "grad_x_input", target: str = "logit", steps: int = 16,
                        baseline: str | int | None = None, keep_first: bool = True,
                        batch_rows: int = BATCH_ROWS) -> list[Attribution]:
        """`attribute` for many sequences [(token_ids, n_prompt), ...], several per compiled call: the
        sequences of a batch are padded to one length and row count and run through one vmapped
        forward and VJP (a corpus of short generations is many small problems; together they make
        larger matrix products). Equal to `attribute` on each sequence; contrastive is not offered."""
        meth = get_method(method)
        if not meth.batchable:
            raise LensError(f"attribute_batch does not take the {method} method (one foil per sequence)")
        if meth.uses_attention:  # one forward each, no backward: nothing to gain from batching
            return [self.attribute(ids, n, method, target) for ids, n in sequences]
        seqs = [(np.asarray(ids, np.int64).reshape(-1), int(n)) for ids, n in sequences]
        for ids, n in seqs:
            self._check(ids, n, method, target, steps)
        ig = meth.path_integral
        path, settings = _path_and_settings(meth, steps, baseline, keep_first)
        alphas, weights = path if path is not None else (np.ones(1), np.ones(1))
        grad_fn, value_fn = _compiled(self.arch, target, False, RULES[meth.rules], batched=True)
        xs_of = [self.wte[ids] for ids, _ in seqs]                                # token embeddings [n, d]
        bases = [self.baseline(x, baseline, keep_first) if ig else np.zeros_like(x) for x in xs_of]
        out: list = [None] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))  # similar lengths share a batch
        rows_max = _bucket(max(len(ids) - n for ids, n in seqs), ROW_BUCKET)
        per_batch = max(1, batch_rows // rows_max)
        for b0 in range(0, len(order), per_batch):
            batch = order[b0:b0 + per_batch]
            length = _bucket(max(len(seqs[i][0]) - 1 for i in batch), SEQ_BUCKET, self.n_ctx)
            xs = np.zeros((per_batch, length, self.d_model), np.float32)
            bs = np.zeros_like(xs)
            pos, tgt = np.zeros((per_batch, rows_max), np.int64), np.zeros((per_batch, rows_max), np.int64)
            for j, i in enumerate(batch):
                ids, n = seqs[i]
                xs[j], bs[j] = _pad_rows(xs_of[i], length), _pad_rows(bases[i], length)
                pos[j] = _pad_to(np.arange(n - 1, len(ids) - 1), rows_max, 0)
                tgt[j] = _pad_to(ids[n:], rows_max, 0)
            with jax_precision():
                vals, g = grad_fn(self.params, xs, bs, pos, tgt, np.zeros_like(tgt), alphas.astype(np.float32),
                                  weights.astype(np.float32))
                if ig:
                    v1, v0 = value_fn(self.params, xs, pos, tgt, tgt), value_fn(self.params, bs, pos, tgt, tgt)
            g = np.asarray(g)
            for j, i in enumerate(batch):
                ids, n = seqs[i]
                n_gen, m = len(ids) - n, min(length, len(ids))
                grads = np.zeros((n_gen, len(ids), self.d_model), np.float32)
                grads[:, :m] = g[j, :n_gen, :m]
                scores, signed = _score(meth, grads, xs_of[i] - bases[i], n)
                values = np.asarray(v1)[j, :n_gen] if ig else np.asarray(vals)[j, 0, :n_gen]
                out[i] = Attribution(method, target, scores, signed, values.astype(np.float64),
                                     np.asarray(v0)[j, :n_gen].astype(np.float64) if ig else None, dict(settings))
        return out

    def baseline(self, x: np.ndarray, spec: str | int | np.ndarray | None, keep_first: bool) -> np.ndarray:
        """The integrated-gradients baseline [n, d] for token embeddings x [n, d]."""
        if isinstance(spec, np.ndarray):
            if spec.shape != x.shape:
                raise LensError(f"baseline has shape {spec.shape}; it must be [tokens, d_model] = {x.shape}")
            return spec.astype(np.float32)
        if spec is None or isinstance(spec, str) and spec == "zero":
            vector = np.zeros(x.shape[1], np.float32)
        elif isinstance(spec, str) and spec == "mean":
            vector = self.wte.mean(0)
        elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) and 0 <= spec < len(self.wte):
            vector = self.wte[spec]
        else:
            raise LensError(f"baseline must be 'zero', 'mean', a token id or an array, not {spec!r}")
        base = np.repeat(np.asarray(vector, np.float32)[None], len(x), 0)
        if keep_first:
            base[0] = x[0]
        return base

    def edits(self, interventions, n: int):
        """`lens.interventions.Edits` of `interventions` checked for this model and n positions (None: none)."""
        from ..interventions import Dims, Edits

        edits = Edits(interventions, Dims.of(self.arch))
        edits.check_length(n)
        return edits if edits else None

    def params_for(self, edits, length: int):
        """The params pytree with `edits` for a (bucketed) sequence of `length` positions."""
        return self.params if edits is None else decoder.with_edits(self.params, edits.stacked(length))

    def mean_attention(self, token_ids, edits=None) -> tuple[np.ndarray, np.ndarray]:
        """(each layer's attention probabilities averaged over heads [L, n, n], the normed final hidden
        states [n, d]) of one forward over token_ids [n] (padded to a shape bucket: causal attention keeps
        the padding out of every real position)."""
        import jax
        import jax.numpy as jnp

        ids = np.asarray(token_ids, np.int64)
        n = len(ids)
        need = self.n_layers * _bucket(n, SEQ_BUCKET, self.n_ctx) ** 2 * 4
        if need > self.memory_budget:
            raise LensError(f"attention over {n} tokens needs {need / 2**30:.1f} GiB for its {self.n_layers} layers' "
                            f"patterns, over the {self.memory_budget / 2**30:.1f} GiB budget (LENS_GRAD_MEMORY)")
        if self._patterns is None:
            arch = self.arch
            self._patterns = jax.jit(lambda params, x: decoder.attention_patterns(x, params, arch, mean_heads=True))
        x = _pad_rows(np.asarray(self.wte[ids], np.float32), _bucket(n, SEQ_BUCKET, self.n_ctx))
        with jax_precision():
            h, patterns = self._patterns(self.params_for(edits, len(x)), jnp.asarray(x))
        return np.asarray(patterns)[:, :n, :n], np.asarray(h)[:n]

    def attention_patterns(self, token_ids, edits=None) -> np.ndarray:
        """[L, H, n, n] every layer's and head's attention probabilities over token_ids [n] (float16:
        the head view's data), from the JAX port (equal to PyTorch's `output_attentions`)."""
        import jax
        import jax.numpy as jnp

        ids = np.asarray(token_ids, np.int64)
        n, size = len(ids), _bucket(len(ids), SEQ_BUCKET, self.n_ctx)
        check_attention_size(self.n_layers, self.n_head, n)
        if self._heads is None:
            arch = self.arch
            self._heads = jax.jit(lambda params, x: decoder.attention_patterns(x, params, arch)[1])
        x = _pad_rows(np.asarray(self.wte[ids], np.float32), size)
        with jax_precision():
            patterns = self._heads(self.params_for(edits, size), jnp.asarray(x))
        return np.asarray(patterns)[:, :, :n, :n].astype(np.float16)

    def _from_attention(self, ids, n_prompt: int, m: Method, target: str, edits=None) -> Attribution:
        """An attention method's rows, and each generated token's target score from the same forward."""
        attention, h = self.mean_attention(ids, edits)
        scores = m.score_attention(attention, n_prompt).astype(np.float32)   # type: ignore[attr-defined]
        z = np.asarray(decoder.logits(h[n_prompt - 1:-1], self.params, self.arch), np.float64)  # [n_gen, V]
        nxt = ids[n_prompt:]
        values = z[np.arange(len(nxt)), nxt]
        if target == "probability":
            values = np.exp(values - np.logaddexp.reduce(z, axis=1))
        return Attribution(m.name, target, scores, None, values.astype(np.float32), None, {})

    def factor_saliency(self, token_ids, loadings: np.ndarray, layers, positions) -> np.ndarray:
        """The article's "saliency of factors": for factor f and position p, how much each input token
        drives the factor there: |gradient x input|_2 per input position of the factor's readout
        r_f(p) = loadings[f] . a(p) / |loadings[f]|^2 (a(p): the MLP neurons of `layers` at p, the
        vector the factorisation saw), rows normalised to sum 1 over positions 0..p.

        loadings [k, len(layers) * d_mlp] (`Factors.loadings`); returns [k, n, n], rows of positions
        not in `positions` zero. One forward, then VJPs in chunks of rows as the memory plan allows."""
        import jax
        import jax.numpy as jnp

        ids = np.asarray(token_ids, np.int64).reshape(-1)
        n, k = len(ids), len(loadings)
        layers = [int(l) for l in layers]
        if not 1 <= n <= self.n_ctx:
            raise LensError(f"need 1 to {self.n_ctx} tokens, not {n}")
        load = np.asarray(loadings, np.float32).reshape(k, len(layers), self.d_mlp)
        directions = load / np.maximum((load ** 2).sum((1, 2), keepdims=True), 1e-30)   # [k, L_sel, m]
        rows = [(f, int(p)) for f in range(k) for p in positions]
        fit, mem = self.memory_plan(n)
        chunk = max(1, min(fit, len(rows)))
        key = (tuple(layers), mem)
        if key not in self._factor_grads:  # the layers and the plan are baked into the compiled function
            arch, sel = self.arch, np.asarray(layers)

            def readout(params, x, dirs):                              # x [n, d] -> [k, n]
                acts = decoder.neurons(x, params, arch, mem)[sel]      # [L_sel, n, m]
                return jnp.einsum("lnm,klm->kn", acts, dirs)

            def grads(params, x, dirs, cot):                           # cot [C, k, n] -> [C, n, d]
                _, vjp = jax.vjp(lambda e: readout(params, e, dirs), x)
                return jax.vmap(lambda c: vjp(c)[0])(cot)
            self._factor_grads[key] = jax.jit(grads)
        factor_grad = self._factor_grads[key]
        x = np.asarray(self.wte[ids], np.float32)
        out = np.zeros((k, n, n), np.float32)
        with jax_precision():
            for c0 in range(0, len(rows), chunk):
                part = rows[c0:c0 + chunk]
                cot = np.zeros((chunk, k, n), np.float32)              # padded to one compiled shape
                for r, (f, p) in enumerate(part):
                    cot[r, f, p] = 1.0
                g = np.asarray(factor_grad(self.params, jnp.asarray(x), jnp.asarray(directions), jnp.asarray(cot)))
                for r, (f, p) in enumerate(part):
                    s = np.linalg.norm(g[r, :p + 1] * x[:p + 1], axis=-1)
                    out[f, p, :p + 1] = s / max(float(s.sum()), 1e-30)
        return out

    def _check(self, ids, n_prompt, method, target, steps) -> Method:
        m = get_method(method)
        if target not in TARGETS:
            raise LensError(f"unknown attribution target {target!r}; choose from {', '.join(TARGETS)}")
        if not 1 <= n_prompt <= len(ids) <= self.n_ctx:
            raise LensError(f"need 1 <= n_prompt ({n_prompt}) <= tokens ({len(ids)}) <= context ({self.n_ctx})")
        if ids.min() < 0 or ids.max() >= self.wte.shape[0]:
            raise LensError(f"token ids must be in 0..{self.wte.shape[0] - 1}")
        if m.path_integral and steps < 1:
            raise LensError(f"{method} needs steps >= 1")
        m.check(target)
        return m

    def plan(self, n: int, n_prompt: int, rows_per_chunk: int | None = None) -> list[Chunk]:
        """Chunks of target rows: as many as fit memory at the longest prefix any row could need,
        each then run on the (bucketed) prefix its own rows need."""
        chunks, t0, n_gen = [], 0, n - n_prompt
        fit, mem = self.memory_plan(n - 1)
        per_chunk = rows_per_chunk or fit
        while t0 < n_gen:
            C = min(per_chunk, n_gen - t0)
            length = _bucket(n_prompt + t0 + C - 1, SEQ_BUCKET, self.n_ctx)
            # rows are padded for fewer compilations, but never past what fits (4 rows of 2,000 tokens did not)
            chunks.append(Chunk(np.arange(t0, t0 + C), length, max(C, min(_bucket(C, ROW_BUCKET), per_chunk)), mem))
            t0 += C
        return chunks

    def _run(self, chunks, ids, n_prompt, x, base, foil_ids, target, method: Method, path, progress=None,
             edits=None):
        """Path-weighted gradients [n_gen, n, d] and the scores at the input (and the baseline).
        `progress(done, total)` is called as each chunk's rows come back."""
        n, n_gen = len(ids), len(ids) - n_prompt
        alphas, weights = path if path is not None else (np.ones(1), np.ones(1))
        pending = []
        with jax_precision():
            for c in chunks:
                grad_fn, value_fn = _compiled(self.arch, target, method.needs_foil, RULES[method.rules], mem=c.memory)
                positions = _pad_to(n_prompt + c.rows - 1, c.padded_rows, 0)
                targets = _pad_to(ids[n_prompt + c.rows], c.padded_rows, 0)
                fl = _pad_to(foil_ids[c.rows], c.padded_rows, 0)
                xs, bs = _pad_rows(x, c.length), _pad_rows(base, c.length)
                params = self.params_for(edits, c.length)
                g = None
                for s0 in range(0, len(alphas), STEP_CHUNK):  # integrated gradients: a chunk of points
                    a, w = alphas[s0:s0 + STEP_CHUNK], weights[s0:s0 + STEP_CHUNK]
                    if path is not None:  # one compiled shape for every chunk: pad with zero-weight points
                        a, w = _pad_to(a, STEP_CHUNK, 1.0), _pad_to(w, STEP_CHUNK, 0.0)
                    vals, gs = grad_fn(params, xs, bs, positions, targets, fl,
                                       a.astype(np.float32), w.astype(np.float32))
                    g = gs if g is None else g + gs
                if path is not None:
                    vals = (value_fn(params, xs, positions, targets, fl),
                            value_fn(params, bs, positions, targets, fl))
                pending.append((c, g, vals))  # JAX dispatches asynchronously: the next chunk traces meanwhile
        grads = np.zeros((n_gen, n, x.shape[1]), np.float32)
        values = np.zeros(n_gen)
        base_values = np.zeros(n_gen) if path is not None else None
        for c, g, vals in pending:
            C, m = len(c.rows), min(c.length, n)
            grads[c.rows, :m] = np.asarray(g)[:C, :m]  # waits for this chunk
            if progress:
                progress(int(c.rows[-1]) + 1, n_gen)
            if base_values is not None:
                values[c.rows], base_values[c.rows] = np.asarray(vals[0])[:C], np.asarray(vals[1])[:C]
            else:
                values[c.rows] = np.asarray(vals)[0, :C]
        return grads, values, base_values

    def _foils(self, foils, n_gen: int) -> np.ndarray:
        if foils is None:
            raise LensError("contrastive attribution needs a foil token (the alternative to explain against)")
        f = np.atleast_1d(np.asarray(foils, dtype=np.int64))
        if f.size == 1:
            f = np.repeat(f, n_gen)
        if f.shape != (n_gen,) or f.min() < 0 or f.max() >= self.wte.shape[0]:
            raise LensError(f"need one foil token id per generated token ({n_gen}) or a single one")
        return f


def _score(method: Method, grads: np.ndarray, delta: np.ndarray, n_prompt: int):
    """Normalised scores [n_gen, n] and signed sums (None for `gradient`) from gradients [n_gen, n, d]
    and the input minus its baseline [n, d]."""
    n_gen, n = grads.shape[:2]
    # causality: token t (at position n_prompt + t) is scored from positions < n_prompt + t only
    grads *= (np.arange(n)[None, :] < (n_prompt + np.arange(n_gen))[:, None])[..., None]
    scores, signed = method.score(grads, delta)
    return (scores / np.maximum(scores.sum(1, keepdims=True), 1e-30)).astype(np.float32), signed


def _path_and_settings(method: Method, steps: int, baseline, keep_first: bool, foil_ids=None):
    """Integrated gradients' path (None for the other methods) and the settings an Attribution records."""
    ig = method.path_integral
    label = _baseline_label(baseline) if ig else None
    path = _path(steps, power=3 if label == "zero" else 1) if ig else None
    settings = dict(steps=steps if ig else None, foils=None if foil_ids is None else foil_ids.tolist(),
                    baseline=label, keep_first=keep_first if ig else None)
    return path, settings


def _baseline_label(spec) -> str | int:  # what settings record of a baseline: its name, token id or "custom"
    if isinstance(spec, np.ndarray):
        return "custom"
    return "zero" if spec is None else spec if isinstance(spec, str) else int(spec)


