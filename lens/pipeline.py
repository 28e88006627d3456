"""The explain pipeline: generation with every tap (runtime) -> attributions (grad) -> logit lens
(analysis) -> one `Explanation`. The runtime engine knows nothing of this layer."""
from __future__ import annotations

import functools
import os
import time

import numpy as np

from .errors import LensError
from .explanation import Explanation, next_tokens
from .runtime import Model, load
from .settings import EXPLAIN, ExplainSettings


class Explainer:
    """A loaded model with its attribution engine and logit lens (both built on first use).

        explainer = lens.Explainer(lens.load("smollm2"))
        expl = explainer.explain("1, 2, 3,", max_new_tokens=10, watch=[" 5"])
    """

    def __init__(self, model: Model, memory_budget_bytes: int | None = None):
        self.model = model
        self._memory_budget = memory_budget_bytes

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, models_dir=None, **kw) -> "Explainer":
        """`lens.load(...)` (same arguments) wrapped in an Explainer."""
        return cls(load(name_or_path, models_dir, **kw))

    def __repr__(self):
        return f"<lens Explainer of {self.model!r}>"

    @functools.cached_property
    def attributor(self):
        from .grad import Attributor
        return Attributor(self.model.store, self._memory_budget)

    @functools.cached_property
    def logit_lens(self):
        from .analysis import LogitLens
        return LogitLens.from_folder(self.model.store)

    def watch_ranks(self, hidden_states: np.ndarray, token_ids: np.ndarray, tokens) -> dict[str, np.ndarray]:
        """{token: [n_layers, n_tokens] logit-lens rank after each layer at each position}."""
        ids = [self.model.token_id(t) for t in tokens]
        ranks = self.logit_lens.analyse(hidden_states, next_tokens(token_ids), top_k=1, watch=ids)["watch_ranks"]
        return {t: ranks[..., i] for i, t in enumerate(tokens)}

    def explain(self, prompt, settings: ExplainSettings | None = None, progress=None, **overrides) -> Explanation:
        """Generate, trace every tap, attribute every generated token, and read the logit lens.

        `settings` (default `lens.settings.EXPLAIN`) with any field overridden by keyword, e.g.
        `max_new_tokens=10, methods=("grad_x_input", "gradient"), watch=[" Paris"]`."""
        s = (settings or EXPLAIN).replace(**overrides)
        say = progress or (lambda msg: None)
        model = self.model
        watch_ids = [model.token_id(w) for w in s.watch]  # bad tokens fail before the slow stages
        foil_id = model.token_id(s.foil) if s.foil else None
        timings, diagnostics = {}, {}

        t = time.perf_counter()
        say("generating")
        gen = model.generate(prompt, s.max_new_tokens, sample=s.sample, temperature=s.temperature, top_k=s.top_k,
                             top_p=s.top_p, seed=s.seed, trace=True)
        timings["generate"] = time.perf_counter() - t
        if gen.n_prompt == len(gen.token_ids):
            raise LensError("no token was generated")

        attributions, signed = {}, {}
        for m in s.methods:
            t = time.perf_counter()
            say(f"attributing ({m})")
            a = self.attributor.attribute(gen.token_ids, gen.n_prompt, method=m, target=s.target,
                                          foils=foil_id, steps=s.ig_steps)
            attributions[m] = a.scores
            if a.signed is not None:
                signed[m] = a.signed
            if a.baseline_values is not None:  # integrated gradients: how far from complete the path sum is
                diagnostics["ig_completeness_error"] = float(a.completeness_error().max())
            timings[f"attribution/{m}"] = time.perf_counter() - t

        t = time.perf_counter()
        say("logit lens")
        tr = gen.trace
        ll = self.logit_lens.analyse(tr.hidden_states, next_tokens(gen.token_ids),
                                     top_k=min(s.lens_top_k, model.d_vocab), watch=watch_ids)
        timings["logit_lens"] = time.perf_counter() - t
        top_tokens = [[model.token_strings(row) for row in layer] for layer in ll["top_ids"]]
        settings_used = dict(gen.settings, methods=list(s.methods), target=s.target, foil=s.foil,
                             ig_steps=s.ig_steps, prompt=prompt if isinstance(prompt, str) else None, **diagnostics)
        return Explanation(
            model_name=model.name, token_ids=gen.token_ids, tokens=model.token_strings(gen.token_ids),
            n_prompt=gen.n_prompt, probabilities=gen.probabilities, attributions=attributions,
            hidden_states=tr.hidden_states, activations=tr.activations, ranks=ll["ranks"],
            top_ids=ll["top_ids"], top_probs=ll["top_probs"],
            watched={w: ll["watch_ranks"][..., i] for i, w in enumerate(s.watch)}, signed=signed,
            top_tokens=top_tokens, settings=settings_used, timings=timings)
