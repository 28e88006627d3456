"""What one actor does to one shard of a corpus. Each actor holds one loaded model (ONNX Runtime
session, and the JAX attributor when tokens are generated) for its whole life; Ray Data hands it
shards, one row each, and takes back one pickled result per shard.

Pass 1 (`Profiler`): generate (a shard's prompts as one left-padded batch) and attribute (all their
generations in a few vmapped calls) when asked, read every MLP neuron of the profiled
layers, and return the shard's per-neuron top-k and the rows the streaming NMF learns from.
Pass 2 (`Contexts`): with the fitted factors, read each token's factor values, and the activations
around the top contexts the report paints."""
from __future__ import annotations

import pickle
import time

import numpy as np

from . import topk as T
from .factors import factor_values

WINDOW = (12, 4)  # tokens shown before and after a top context's firing token


def window(position: int, length: int) -> tuple[int, int]:
    """[lo, hi) of the tokens the report shows around a firing `position` of a `length`-token sequence."""
    return max(0, position - WINDOW[0]), min(length, position + WINDOW[1] + 1)


def pad_batch(seqs: list[np.ndarray]) -> np.ndarray:
    """[batch, longest] token ids, short sequences padded at the end with token 0 (causal attention
    keeps padding out of every real position)."""
    out = np.zeros((len(seqs), max(len(s) for s in seqs)), np.int64)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out


def token_rows(acts: list[np.ndarray], examples, include_first: bool):
    """Activations of all kept tokens of a shard, [tokens, units], and each token's example and
    position, ordered by (example, position): the order `topk.of_tokens` breaks ties in (a shard's
    prompts come sorted by length). `acts[i]` is examples[i]'s [layers, seq, d_mlp]."""
    rows, ex, pos = [], [], []
    start = 0 if include_first else 1
    for e, a in sorted(zip(examples, acts), key=lambda pair: pair[0]):
        n = a.shape[1]
        if n <= start:
            continue
        rows.append(a[:, start:].transpose(1, 0, 2).reshape(n - start, -1))   # [seq', layers * d_mlp]
        ex.append(np.full(n - start, e, np.int64))
        pos.append(np.arange(start, n, dtype=np.int64))
    if not rows:
        none = np.zeros(0, np.int64)
        return np.zeros((0, acts[0].shape[0] * acts[0].shape[2]), np.float32), none, none
    return np.concatenate(rows), np.concatenate(ex), np.concatenate(pos)


class _Actor:
    """A model loaded once per actor; Ray Data calls it with a batch of shard rows."""

    def __init__(self, folder: str, layers: list[int], threads: int | None = None):
        from ..runtime import load
        self.model = load(folder, threads=threads, verify=False)  # the driver verified the folder
        self.layers = list(layers)
        self._explainer = None

    @property
    def explainer(self):
        if self._explainer is None:
            from ..pipeline import Explainer
            self._explainer = Explainer(self.model)
        return self._explainer

    def activations(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        """[layers, seq, d_mlp] for each sequence, from one padded graph call."""
        acts = self.model.mlp_activations(pad_batch(seqs), self.layers)       # [B, layers, S, d_mlp]
        return [acts[i, :, :len(s)] for i, s in enumerate(seqs)]

    def __call__(self, batch: dict) -> dict:
        import ray
        node = ray.get_runtime_context().get_node_id()  # which machine did the work (the driver counts them)
        results = []
        for job in batch["job"]:
            t = time.perf_counter()
            res = self.shard(pickle.loads(bytes(job)))
            results.append(pickle.dumps(dict(res, node=node, seconds=time.perf_counter() - t), protocol=5))
        return {"shard": np.asarray(batch["shard"]), "result": np.asarray(results, dtype=object)}


class Profiler(_Actor):
    """Pass 1. A job: {"examples": [example, ...], "token_ids": [[prompt ids], ...]}."""

    def __init__(self, folder, layers, settings: dict, factors: int, threads: int | None = None):
        super().__init__(folder, layers, threads)
        self.s = settings
        self.factors = factors

    def shard(self, job: dict) -> dict:
        s, examples = self.s, job["examples"]
        seqs = [np.asarray(t, np.int64) for t in job["token_ids"]]
        out = {"examples": examples, "n_prompt": [len(t) for t in seqs], "token_ids": seqs,
               "probabilities": [np.zeros(0, np.float32)] * len(seqs), "attributions": [{} for _ in seqs]}
        if s["max_new_tokens"]:
            gens = self.model.generate_batch([ids.tolist() for ids in seqs], s["max_new_tokens"], trace=True)
            for i, gen in enumerate(gens):
                out["token_ids"][i], out["probabilities"][i] = gen.token_ids, gen.probabilities
            generated = [i for i, g in enumerate(gens) if len(g.token_ids) > g.n_prompt]
            for m in s["methods"]:  # every sequence of the shard in a few vmapped calls
                for i, a in zip(generated, self.attribute([gens[i] for i in generated], m)):
                    out["attributions"][i][m] = a.scores
            acts = [g.trace.activations[self.layers] for g in gens]
        else:
            acts = self.activations(seqs)
        rows, ex, pos = token_rows(acts, examples, s["include_first"])
        out["topk"] = T.of_tokens(rows, ex, pos, s["top_k"]).to_dict()
        if self.factors:  # what the streaming NMF learns from: negatives clipped, half precision in transit
            out["nmf_rows"] = np.maximum(rows, 0).astype(np.float16)
        return out

    def attribute(self, gens, method: str):
        """Attributions of generations, as `Explainer.explain` computes them with default settings."""
        from ..methods import get
        from ..settings import EXPLAIN
        if not gens:
            return []
        ig = get(method).path_integral
        return self.explainer.attributor.attribute_batch(
            [(g.token_ids, g.n_prompt) for g in gens], method=method, steps=EXPLAIN.ig_steps,
            baseline=self.explainer.baseline(EXPLAIN.ig_baseline) if ig else None)


class Contexts(_Actor):
    """Pass 2. A job: {"examples", "token_ids" (the full sequences), "paint": [(unit, example, position)]}."""

    def __init__(self, folder, layers, loadings, top_k: int, include_first: bool, threads: int | None = None):
        super().__init__(folder, layers, threads)
        self.loadings, self.top_k, self.include_first = loadings, top_k, include_first

    def shard(self, job: dict) -> dict:
        seqs = [np.asarray(t, np.int64) for t in job["token_ids"]]
        acts = self.activations(seqs)
        out = {}
        if self.loadings is not None:
            rows, ex, pos = token_rows(acts, job["examples"], self.include_first)
            w = factor_values(rows, self.loadings)
            out.update(topk=T.of_tokens(w, ex, pos, self.top_k).to_dict(), factor_values=w, examples=ex, positions=pos)
        where = {e: i for i, e in enumerate(job["examples"])}
        windows = []
        for unit, example, position in job["paint"]:  # a neuron's activation around one of its top contexts
            a = acts[where[example]]
            lo, hi = window(position, a.shape[1])
            layer, neuron = divmod(unit, a.shape[2])
            windows.append((unit, example, position, lo, a[layer, lo:hi, neuron].astype(np.float32)))
        out["windows"] = windows
        return out
