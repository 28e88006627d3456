"""The explain pipeline: generation with every tap (runtime) -> attributions (grad) -> logit lens
(analysis) -> one `Explanation`. The runtime engine knows nothing of this layer."""
from __future__ import annotations

import functools
import os
import sys
import time

import numpy as np

from . import methods as M
from .errors import LensError
from .explanation import Explanation, next_tokens
from .interventions import Intervention, RemoveFactor, remove_factor
from .runtime import Model, load
from .settings import EXPLAIN, ExplainSettings, check_attention_size


class Explainer:
    """A loaded model with its attribution engine and logit lens (both built on first use).

        explainer = lens.Explainer(lens.load("smollm2"))
        expl = explainer.explain("1, 2, 3,", max_new_tokens=10, watch=[" 5"])
    """

    def __init__(self, model: Model | str | os.PathLike, memory_budget_bytes: int | None = None):
        """`model`: a loaded `lens.Model`, or a model name or folder (loaded with `lens.load`)."""
        if isinstance(model, (str, os.PathLike)):
            model = load(model)
        if not isinstance(model, Model):
            raise LensError(f"Explainer(model): model must be a lens.Model (lens.load(...)) or a model name or "
                            f"folder, not {type(model).__name__}")
        if memory_budget_bytes is not None and (not isinstance(memory_budget_bytes, int)
                                                or isinstance(memory_budget_bytes, bool) or memory_budget_bytes < 1):
            raise LensError(f"memory_budget_bytes must be a positive integer, not {memory_budget_bytes!r}")
        self.model = model
        self._memory_budget = memory_budget_bytes

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, models_dir=None, **kw) -> Explainer:
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
        lens = LogitLens.from_folder(self.model.store)
        if "attributor" in self.__dict__:  # one copy of the unembedding in JAX's memory, not two
            lens.unembed_device = self.attributor.unembedding
        return lens

    def prepare(self, settings: ExplainSettings | None = None) -> Explainer:
        """Build the engines `settings` need (JAX, the weights on its device), as `explain` does
        first. `lens.load` opens the ONNX Runtime session on a thread, so this overlaps it."""
        if (settings or EXPLAIN).methods:
            _ = self.attributor
        _ = self.logit_lens
        return self

    def new_tokens(self, settings: ExplainSettings) -> int:
        """How many tokens `explain` adds to the prompt: the given continuation's, else max_new_tokens."""
        c = settings.continuation
        if c is None:
            return settings.max_new_tokens
        return len(self.model.encode(c, bos=False)) if isinstance(c, str) else len(c)

    def devices(self) -> dict:
        """Where each engine runs: ONNX Runtime's provider, JAX's platform (once it is loaded)."""
        out = {"onnxruntime": self.model.providers[0]}
        if "attributor" in self.__dict__:
            import jax
            out["jax"] = jax.devices()[0].platform
        return out

    def watch_id(self, text: str) -> tuple[int, list[str]]:
        """The token a watched string is followed by (its first: " 1564" is " 15" + "64"), and its
        tokens, so a view can say that only the first one is followed."""
        if not isinstance(text, str) or not text:
            raise LensError(f"a watched token must be non-empty text, not {text!r}")
        ids = self.model.encode(text, bos=False)
        if not ids:
            raise LensError(f"{text!r} is no token for this model")
        return ids[0], self.model.isolated_strings(ids)

    def baseline(self, spec: str):
        """An integrated-gradients baseline setting -> what `Attributor.attribute` takes: "zero" and
        "mean" as they are, "pad" the end-of-text token, any other text its one token."""
        if spec in ("zero", "mean"):
            return spec
        if spec == "pad":
            if not self.model.eos_ids:
                raise LensError(f"{self.model.name} has no end-of-text token to use as the baseline")
            return min(self.model.eos_ids)
        try:
            return self.model.token_id(spec)
        except LensError as e:
            raise LensError(f"the baseline {e}; give zero, mean, pad or a text of one token") from None

    def factor_saliency(self, expl, k: int = 5, layers=None, include_first: bool = False) -> np.ndarray:
        """The saliency of `expl`'s factors (`expl.factors(k, layers, include_first=...)`, the report's):
        for each factor and position factorised, each input token's share of the gradient x input of the
        factor's readout there (`Attributor.factor_saliency`). Stored on `expl` (the report's factors view
        then paints it when a sparkline point is hovered, `save` keeps it) and returned [k, n, n]."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise LensError(f"factor saliency needs at least one factor, not {k!r}")
        f = expl.factors(k, layers, include_first=include_first)
        scores = self.attributor.factor_saliency(expl.token_ids, f.loadings, f.layers, f.positions)
        expl.factor_saliency = scores
        expl.settings["factor_saliency"] = {"k": f.k, "layers": list(f.layers), "positions": [int(p) for p in f.positions]}
        return scores

    def faithfulness(self, expl, seed: int = 0, model: Model | None = None) -> dict:
        """AOPC per method (and for a random ranking, the control), per generated token and averaged:
        {method: {"morf": [n_gen], "lerf": [n_gen], "aopc_morf": mean, "aopc_lerf": mean}}. One batched
        ONNX Runtime call per generated token and group of masks with the same unmasked prefix (that
        prefix read from one unmasked pass's cache), each distinct mask once (rankings often agree),
        the unembedding at the last position only."""
        from .analysis import faithfulness as F

        model = model or self.model  # an intervened explanation's masks run on the intervened model
        rankings = dict(expl.attributions)
        rankings["random"] = None
        out = {m: {"morf": [], "lerf": []} for m in rankings}
        cache = model.prefill(expl.token_ids[:-1], logits_from=-1)["present"]  # every token's prefix
        for t in range(expl.n_generated):
            pos = expl.n_prompt + t                                   # the generated token, scored from pos - 1
            ids, target = expl.token_ids[:pos], int(expl.token_ids[pos])
            p0 = float(expl.probabilities[t])
            masks = np.concatenate([
                np.concatenate([F.removal_masks(scores, True), F.removal_masks(scores, False)])
                for scores in (F.random_scores(pos, seed + t) if a is None else a[t, :pos] for a in rankings.values())])
            distinct, where = np.unique(masks, axis=0, return_inverse=True)
            probs = model.masked_probabilities(ids, distinct, target, cache)[where.ravel()]
            for i, m in enumerate(rankings):                          # [2 * STEPS] per ranking, in order
                curve = probs[2 * F.STEPS * i:2 * F.STEPS * (i + 1)]
                out[m]["morf"].append(F.aopc(p0, curve[:F.STEPS]))
                out[m]["lerf"].append(F.aopc(p0, curve[F.STEPS:]))
        for v in out.values():
            v["aopc_morf"], v["aopc_lerf"] = float(np.mean(v["morf"])), float(np.mean(v["lerf"]))
        return out

    def watch_ranks(self, hidden_states: np.ndarray, token_ids: np.ndarray, tokens) -> dict[str, np.ndarray]:
        """{token: [n_layers, n_tokens] logit-lens rank after each layer at each position}."""
        ids = [self.watch_id(t)[0] for t in tokens]
        ranks = self.logit_lens.analyse(hidden_states, next_tokens(token_ids), top_k=1, watch=ids)["watch_ranks"]
        return {t: ranks[..., i] for i, t in enumerate(tokens)}

    def explain(self, prompt, settings: ExplainSettings | None = None, progress=None, bars: bool = False,
                interventions=None, **overrides) -> Explanation:
        """Generate, trace every tap, attribute every generated token, and read the logit lens.

        `settings` (default `lens.settings.EXPLAIN`) with any field overridden by keyword, e.g.
        `max_new_tokens=10, methods=("grad_x_input", "gradient"), watch=[" Paris"]`. `progress` gets
        each stage's name; `bars` shows a progress bar over the attribution's chunks (tqdm).

        `interventions` (`lens.interventions`: ablate, scale, steer, patch, RemoveFactor): everything is
        of the intervened model (generation in the ONNX graph, attributions in the JAX port), and
        `expl.what_if` holds what the unedited model does instead (the what-if view)."""
        if isinstance(settings, dict):  # explain(prompt, {"max_new_tokens": 5}) means the same as keywords
            settings, overrides = None, {**settings, **overrides}
        if settings is not None and not isinstance(settings, ExplainSettings):
            raise LensError(f"explain(prompt, settings): settings must be lens.ExplainSettings or a dict, "
                            f"not {type(settings).__name__}")
        s = (settings or EXPLAIN).replace(**overrides)
        say = progress or (lambda msg: None)
        model = self.model
        watched = {w: self.watch_id(w) for w in s.watch}  # bad tokens fail before the slow stages
        foil_id = model.token_id(s.foil) if s.foil else None
        baseline = self.baseline(s.ig_baseline) if any(M.get(m).path_integral for m in s.methods) else None
        asked = prompt
        if s.chat:
            prompt = model.chat_prompt(prompt if isinstance(prompt, str) else model.decode(model.prompt_ids(prompt)))
        ids = model.prompt_ids(prompt)                   # a bad prompt fails before any stage starts
        if s.continuation is None:
            model.check_length(len(ids), s.max_new_tokens)
        timings, completeness = {}, None
        asked_edits = list(interventions) if isinstance(interventions, (list, tuple)) else \
            [] if interventions is None else [interventions]
        self._check_edits(asked_edits, len(ids) + self.new_tokens(s))  # bad interventions fail before any stage
        self.prepare(s)
        if s.attention:
            check_attention_size(model.n_layers, model.n_heads, len(ids) + self.new_tokens(s))
        if s.methods and self.new_tokens(s):  # a sequence whose gradients cannot fit the budget fails before generating
            self.attributor.memory_plan(len(ids) + self.new_tokens(s) - 1)

        t = time.perf_counter()
        edits, original, continuation = [], None, s.continuation
        if asked_edits:
            say("the unedited run")
            original = self._generate(model, ids, s, continuation)
            edits = self._resolve(asked_edits, original)
            if any(isinstance(e, RemoveFactor) for e in asked_edits):
                continuation = continuation if continuation is not None else original.generated_ids.tolist()
            model = model.intervened(edits)
            timings["unedited run"] = time.perf_counter() - t
            t = time.perf_counter()
        say("tracing the given continuation" if continuation is not None else "generating")
        gen = self._generate(model, ids, s, continuation)
        timings["generate"] = time.perf_counter() - t

        attributions, signed = {}, {}
        for m in s.methods if len(gen.token_ids) > gen.n_prompt else ():  # no generated token: a text profiled
            t = time.perf_counter()
            say(f"attributing ({m})")
            a = self.attributor.attribute(gen.token_ids, gen.n_prompt, method=m, target=s.target, foils=foil_id,
                                          steps=s.ig_steps, baseline=baseline, progress=_bar(m) if bars else None,
                                          interventions=edits)
            attributions[m] = a.scores
            if a.signed is not None:
                signed[m] = a.signed
            if a.baseline_values is not None:  # integrated gradients: how far from complete the path sum is
                completeness = float(a.completeness_error().max())
            timings[f"attribution/{m}"] = time.perf_counter() - t

        t = time.perf_counter()
        say("logit lens")
        tr = gen.trace
        ll = self.logit_lens.analyse(tr.hidden_states, next_tokens(gen.token_ids),
                                     top_k=min(s.lens_top_k, model.d_vocab), watch=[w[0] for w in watched.values()])
        timings["logit_lens"] = time.perf_counter() - t
        top_tokens = [[model.isolated_strings(row) for row in layer] for layer in ll["top_ids"]]
        settings_used = dict(gen.settings, methods=list(s.methods), target=s.target, foil=s.foil,
                             ig_steps=s.ig_steps, ig_baseline=s.ig_baseline,
                             prompt=asked if isinstance(asked, str) else None, chat=s.chat,
                             bos=bool(model.add_bos and gen.token_ids[0] == model.bos_token_id),
                             watch_tokens={w: v[1] for w, v in watched.items()})
        expl = Explanation(
            model_name=model.name, token_ids=gen.token_ids, tokens=model.token_strings(gen.token_ids),
            n_prompt=gen.n_prompt, probabilities=gen.probabilities, attributions=attributions,
            hidden_states=tr.hidden_states, activations=tr.activations, ranks=ll["ranks"],
            top_ids=ll["top_ids"], top_probs=ll["top_probs"],
            watched={w: ll["watch_ranks"][..., i] for i, w in enumerate(s.watch)}, signed=signed,
            top_tokens=top_tokens, settings=settings_used, timings=timings,
            prompt_text=model.decode(gen.token_ids[:gen.n_prompt]), generated_text=model.decode(gen.generated_ids),
            ig_completeness_error=completeness, devices=self.devices(), family=model.architecture)
        if s.attention:
            t = time.perf_counter()
            say("attention patterns")
            if model.attention_taps:  # the graph's own (lens export --attention-taps)
                expl.attention = model.attention(gen.token_ids).astype(np.float16)
            else:
                expl.attention = self.attributor.attention_patterns(gen.token_ids, self.attributor.edits(
                    edits, len(gen.token_ids)))
            expl.settings["attention_from"] = "onnxruntime" if model.attention_taps else "jax"
            expl.timings["attention"] = time.perf_counter() - t
        if s.faithfulness:
            t = time.perf_counter()
            say("faithfulness (AOPC)")
            faithful = self.faithfulness(expl, model=model)
            expl.timings["faithfulness"] = time.perf_counter() - t
            expl.aopc = faithful
        if original is not None:
            t = time.perf_counter()
            say("what the intervention changed")
            expl.what_if = self.what_if(original, gen, edits, asked_edits)
            expl.timings["what_if"] = time.perf_counter() - t
        return expl

    # ---------------------------------------------------------------- interventions
    def _generate(self, model: Model, ids, s: ExplainSettings, continuation):
        if continuation is not None:
            return model.force(ids, list(continuation) if isinstance(continuation, tuple) else continuation)
        return model.generate(ids, s.max_new_tokens, sample=s.sample, temperature=s.temperature, top_k=s.top_k,
                              top_p=s.top_p, seed=s.seed, trace=True)

    def _check_edits(self, asked: list, n: int) -> None:
        """Every intervention checked against the model (unknown hook, a unit out of range, a vector of
        the wrong width, a position past the sequence) before any slow stage."""
        plain = [e for e in asked if isinstance(e, Intervention)]
        other = [e for e in asked if not isinstance(e, (Intervention, RemoveFactor))]
        if other:
            raise LensError(f"interventions must be lens.interventions objects (ablate, scale, steer, patch, "
                            f"RemoveFactor), not {type(other[0]).__name__}")
        self.model.editable(plain).check_length(n)
        for e in asked:
            if isinstance(e, RemoveFactor) and not (isinstance(e.factor, int) and e.factor >= 0):
                raise LensError(f"remove factor index {e.factor!r}: indices count from 0 (the report's factor 1)")
            if isinstance(e, RemoveFactor) and e.k is not None and not 0 <= e.factor < e.k:
                raise LensError(f"remove factor {e.factor + 1}: there are {e.k} factors, 1..{e.k}")

    def _resolve(self, asked: list, original) -> list:
        """The interventions with each RemoveFactor replaced by its edits, from the unedited run's factors."""
        from .analysis.neurons import factorize
        from .settings import DEFAULT_FACTORS

        out = []
        acts = original.trace.activations.astype(np.float32)
        for e in asked:
            if not isinstance(e, RemoveFactor):
                out.append(e)
                continue
            exclude = {} if e.include_first else {0: "left out"}
            k = e.k or min(DEFAULT_FACTORS, acts.shape[1] - len(exclude))
            out += remove_factor(factorize(acts, k, e.layers, exclude=exclude), e.factor)
        return out

    def what_if(self, original, gen, edits: list, asked: list) -> dict:
        """What the unedited model does (`original`: its run) against the intervened run `gen`: its own
        continuation and probabilities, and on the intervened run's tokens its probabilities and
        logit-lens ranks (the what-if view's numbers)."""
        n = gen.n_prompt
        if np.array_equal(original.token_ids, gen.token_ids):
            same = original
        else:  # the unedited model read on the intervened run's tokens
            same = self.model.force(gen.token_ids[:n].tolist(), gen.token_ids[n:].tolist()) \
                if len(gen.token_ids) > n else original
        ranks = self.logit_lens.analyse(same.trace.hidden_states, next_tokens(gen.token_ids), top_k=1)["ranks"]
        return dict(interventions=[e.describe() for e in asked],
                    edits=[e.to_json() for e in edits if isinstance(e, Intervention)],
                    forced=any(isinstance(e, RemoveFactor) for e in asked),
                    original_ids=original.generated_ids.tolist(),
                    original_tokens=self.model.token_strings(original.token_ids)[original.n_prompt:],
                    original_probabilities=[float(p) for p in original.probabilities],
                    original_text=self.model.decode(original.generated_ids),
                    unedited_probabilities=[float(p) for p in same.probabilities],
                    unedited_ranks=ranks[:, n - 1:len(gen.token_ids) - 1].astype(int).tolist())

    def patch(self, clean, corrupted, answer: str, foil: str, kinds=None):
        """Activation patching of `corrupted` from `clean` (prompts of the same length in tokens) with the
        metric logit(answer) - logit(foil) at the last position, and attribution patching's estimate
        (`lens.grad.patching`). Returns a `Patching` (heatmaps, agreement, `to_dict`, `summary`)."""
        from .grad.patching import KINDS, activation_patching

        m = self.model
        c_ids, x_ids = m.prompt_ids(clean), m.prompt_ids(corrupted)
        if len(c_ids) != len(x_ids):
            raise LensError(f"the clean prompt is {len(c_ids)} tokens and the corrupted one {len(x_ids)}: patching "
                            f"compares position by position, so they must tokenize to the same length")
        try:
            a, f = m.token_id(answer), m.token_id(foil)
        except LensError as e:
            raise LensError(f"the answer and foil must each be one token: {e}") from None
        result = activation_patching(self.attributor, c_ids, x_ids, a, f, KINDS if kinds is None else kinds)
        result.model_name, result.answer, result.foil = m.name, answer, foil
        result.clean_tokens, result.corrupted_tokens = m.token_strings(c_ids), m.token_strings(x_ids)
        return result

    def causal_factors(self, expl, k: int = 5, layers=None, include_first: bool = False) -> np.ndarray:
        """For each of `expl`'s factors (`expl.factors(k, layers, include_first=...)`, the report's), the
        change of every generated token's probability when the factor is removed from the neurons
        (`lens.interventions.remove_factor`, the continuation kept): k forward passes. Stored on `expl`
        (the factors view shows it) and returned [k, n_generated]."""
        if expl.what_if:
            raise LensError("causal factors are measured on an unedited explanation (this one ran with interventions)")
        if not expl.n_generated:
            raise LensError("causal factors need generated tokens (this explanation has none)")
        f = expl.factors(k, layers, include_first=include_first)
        ids = expl.token_ids.tolist()
        out = np.zeros((f.k, expl.n_generated), np.float32)
        for i in range(f.k):
            run = self.model.intervened(remove_factor(f, i)).force(ids[:expl.n_prompt], ids[expl.n_prompt:])
            out[i] = run.probabilities - expl.probabilities
        expl.causal_factors = out
        expl.settings["causal_factors"] = {"k": f.k, "layers": list(f.layers),
                                           "positions": [int(p) for p in f.positions]}
        return out


def _bar(method: str):
    """A tqdm bar over one method's attribution chunks (on stderr; gone when it is done)."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=f"lens: {method}", unit="token", leave=False, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return update
