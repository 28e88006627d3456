"""Generation with a KV cache: greedy or sampled, one prompt or a left-padded batch, or a given
continuation traced instead (forced decoding); every tap of every position collected on request."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import sampling
from ..errors import LensError
from .results import Generation, Trace, TraceWriter


class Generating:
    """The generation side of a `Model` (needs `session_run`, `prompt_ids`, `check_length`, `run`,
    `_trace`, `eos_ids`, `taps`, `_inputs`)."""
    eos_ids: set
    taps: list
    session_run: Callable[..., dict]
    prefill: Callable[..., dict]
    prompt_ids: Callable[..., list]
    check_length: Callable[[int, int], None]
    encode: Callable[..., list]
    run: Callable[..., Trace]
    _trace: Callable[[dict], Trace]

    def generate(self, prompt: str | list[int], max_new_tokens: int = 20, sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None, stop_at_eos: bool = True, trace: bool = False) -> Generation:
        """Continue `prompt` with a KV cache: greedy by default, or sampling (temperature, top-k,
        top-p; the same seed gives the same tokens).

        With `trace=True` every tap of every position is collected from the very graph calls that
        generate (prompt pass, then one per token, plus one for the last token), so the result
        carries the full-sequence Trace without running the sequence again.
        """
        ids = self.prompt_ids(prompt)
        self.check_length(len(ids), max_new_tokens)
        if sample:
            sampling.check(temperature, top_k, top_p)
        rng = np.random.default_rng(seed)
        out_ids, probs = list(ids), []
        traced = TraceWriter(self, len(ids) + max_new_tokens) if trace else None
        each = traced.add if traced else None
        past, step = None, np.asarray(ids)
        for _ in range(max_new_tokens):
            # the prompt in blocks, then one token a step (a trace keeps every position's logits)
            res = self.prefill(step, past, taps=trace, logits_from=0 if trace else -1, each=each)
            logits = res["logits"][0, -1].astype(np.float64)
            p = sampling.softmax(logits)
            if sample:
                nxt = int(rng.choice(len(p), p=sampling.distribution(logits, temperature, top_k, top_p)))
            else:
                nxt = int(np.argmax(logits))
            out_ids.append(nxt)
            probs.append(p[nxt])
            if stop_at_eos and nxt in self.eos_ids:
                break
            past, step = res["present"], np.asarray([nxt])
        settings = dict(max_new_tokens=max_new_tokens, sample=sample, temperature=temperature,
                        top_k=top_k, top_p=top_p, seed=seed)
        gen = Generation(np.asarray(out_ids, np.int64), len(ids), np.asarray(probs, np.float32), settings)
        if traced:
            if len(out_ids) > len(ids):  # the last token was sampled but never fed through the model
                traced.add(self.session_run(np.asarray(out_ids[-1:]), res["present"], taps=True))
            else:  # no new token asked for
                self.prefill(ids, taps=True, each=traced.add)
            gen.trace = traced.trace()
        return gen

    def generate_batch(self, prompts, max_new_tokens: int = 20, stop_at_eos: bool = True,
                       trace: bool = False) -> list[Generation]:
        """Greedy `generate` for many prompts at once: left-padded into one batch, every row with its
        own positions and the padding masked out of attention, so each row computes what it would
        alone (equal to `generate` up to float rounding). A row that reaches EOS stops there; the
        batch runs until every row has. Needs a graph with attention_mask and position_ids inputs."""
        if max_new_tokens == 0 or not {"attention_mask", "position_ids"} <= self._inputs:
            return [self.generate(p, max_new_tokens, stop_at_eos=stop_at_eos, trace=trace) for p in prompts]
        rows = [self.prompt_ids(p) for p in prompts]
        for ids in rows:
            self.check_length(len(ids), max_new_tokens)
        lengths = np.asarray([len(ids) for ids in rows])
        width = int(lengths.max())
        pad = width - lengths                                             # left padding of each row
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            ids[i, pad[i]:], mask[i, pad[i]:] = r, 1
        positions = np.maximum(np.arange(width)[None] - pad[:, None], 0)
        new, probs, calls = [], [], []
        finished = np.zeros(len(rows), bool)
        past, step = None, ids
        for t in range(max_new_tokens):
            res = self.session_run(step, past, taps=trace, attention_mask=mask, position_ids=positions,
                                   logits_from=0 if trace else -1)
            calls.append(res)
            cache = res.pop("present")                                    # only the newest cache is kept
            logits = res["logits"][:, -1].astype(np.float64)              # [B, d_vocab]
            p = sampling.softmax(logits)
            nxt = logits.argmax(1)
            new.append(nxt)
            probs.append(p[np.arange(len(rows)), nxt])
            finished |= np.isin(nxt, list(self.eos_ids)) if stop_at_eos else False
            if finished.all():
                break
            past, step = cache, nxt[:, None]
            mask = np.concatenate([mask, np.ones((len(rows), 1), np.int64)], 1)
            positions = (lengths + t)[:, None]
        if trace:  # the last tokens were chosen but never fed through the model
            fed = cache[0].shape[2]                                       # positions in the cache
            if mask.shape[1] == fed:                                      # the loop stopped before extending it
                mask = np.concatenate([mask, np.ones((len(rows), 1), np.int64)], 1)
            last = self.session_run(np.stack(new[-1:], 1), cache, taps=True, attention_mask=mask,
                                    position_ids=(lengths + len(new) - 1)[:, None])
            calls.append(last)
            taps = {k: np.concatenate([c[k] for c in calls], axis=1) for k in ["logits", *self.taps]}
        out = []
        generated, probs = np.stack(new, 1), np.stack(probs, 1)           # [B, steps]
        for i, r in enumerate(rows):
            n_new = len(new)
            if stop_at_eos:
                hits = np.flatnonzero(np.isin(generated[i], list(self.eos_ids)))
                n_new = int(hits[0]) + 1 if len(hits) else n_new
            gen = Generation(np.asarray(r + generated[i, :n_new].tolist(), np.int64), len(r),
                             probs[i, :n_new].astype(np.float32), dict(max_new_tokens=max_new_tokens, sample=False))
            if trace:
                keep = slice(pad[i], pad[i] + len(r) + n_new)
                gen.trace = self._trace({k: v[i:i + 1, keep] for k, v in taps.items()})
            out.append(gen)
        return out

    def force(self, prompt, continuation) -> Generation:
        """Explain a given continuation instead of generating one (inseq's forced decoding): one
        full pass over prompt + continuation with every tap; each continuation token's probability
        is the model's at the position before it."""
        ids = self.prompt_ids(prompt)
        cont = self.encode(continuation, bos=False) if isinstance(continuation, str) else self.prompt_ids(continuation)
        if not cont:
            raise LensError("the continuation is empty")
        self.check_length(len(ids), len(cont))
        trace = self.run(ids + cont)
        p = sampling.softmax(trace.logits[len(ids) - 1:-1].astype(np.float64))      # [n_cont, d_vocab]
        probs = p[np.arange(len(cont)), cont].astype(np.float32)
        return Generation(np.asarray(ids + cont, np.int64), len(ids), probs, {"forced": True}, trace)
