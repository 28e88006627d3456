"""`Explanation`: everything lens computed about one generation, as plain numpy arrays plus metadata,
with the analyses as methods (inseq's one output object: show, save, load). Saved as one .npz file
(arrays + a JSON metadata entry) that loads without the model; both directions are derived from the
dataclass fields, so a new field is saved and loaded without touching this code."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from .errors import LensError



@dataclass(eq=False)
class Explanation:
    model_name: str
    token_ids: np.ndarray                 # [n_tokens] prompt then generated
    tokens: list[str]                     # display text of each token
    n_prompt: int
    probabilities: np.ndarray             # [n_generated] p of each generated token when it was chosen
    attributions: dict[str, np.ndarray]   # method -> [n_generated, n_tokens], rows sum to 1
    hidden_states: np.ndarray             # [n_layers + 1, n_tokens, d_model]
    activations: np.ndarray               # [n_layers, n_tokens, d_mlp]
    ranks: np.ndarray                     # [n_layers, n_tokens] logit-lens rank of the next token
    top_ids: np.ndarray                   # [n_layers, n_tokens, k] logit-lens top-k after each layer
    top_probs: np.ndarray                 # [n_layers, n_tokens, k]
    watched: dict[str, np.ndarray] = field(default_factory=dict)  # token text -> [n_layers, n_tokens]
    signed: dict[str, np.ndarray] = field(default_factory=dict)   # method -> unnormalised signed scores
    top_tokens: list = field(default_factory=list)                # display text of top_ids, same shape
    settings: dict = field(default_factory=dict)                  # what was asked (generation, methods, ...)
    timings: dict = field(default_factory=dict)
    prompt_text: str = ""                 # decoded from the ids (a token may hold part of a character)
    generated_text: str = ""
    aopc: dict = field(default_factory=dict)          # faithfulness: ranking -> {morf, lerf, aopc_morf, aopc_lerf}
    ig_completeness_error: float | None = None        # integrated gradients: max |sum - (f(x) - f(x'))| / |...|
    devices: dict = field(default_factory=dict)       # engine -> where it ran (onnxruntime, jax)
    family: str = ""                                  # the model's family (lens.families), e.g. "gemma3"
    # the saliency of the report's factors ([k, n, n]: factor, position, input; empty when not computed),
    # for the factors settings["factor_saliency"] names (Explainer.factor_saliency)
    factor_saliency: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.float32))
    # every layer's and head's attention probabilities [L, H, n, n] (float16; empty unless asked: the head view)
    attention: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 0), np.float16))
    # what an intervention changed (`explain(..., interventions=...)`; empty without): the interventions, the
    # unedited run's continuation and probabilities, and the unedited model's probabilities and logit-lens
    # ranks of this run's tokens (the what-if view)
    what_if: dict = field(default_factory=dict)
    # [k, n_generated] each generated token's probability change when factor f is removed (empty unless
    # computed: Explainer.causal_factors), for the factors settings["causal_factors"] names
    causal_factors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def __post_init__(self):
        # files of lens <= 0.2 kept these results among the settings
        for key, name in (("faithfulness", "aopc"), ("ig_completeness_error",) * 2, ("devices",) * 2):
            if key in self.settings and getattr(self, name) in ({}, None):
                setattr(self, name, self.settings.pop(key))

    def __eq__(self, other) -> bool:
        """Same values in every field (arrays compared element-wise, dtype-independent)."""
        from . import persist

        if not isinstance(other, Explanation):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            kind = persist.kind(f)
            if kind == "array" and not _same_array(a, b):
                return False
            if kind == "arrays" and (list(a) != list(b) or not all(_same_array(a[k], b[k]) for k in a)):
                return False
            if kind == "json" and a != b:
                return False
        return True

    # --------------------------------------------------------------- shape
    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def n_generated(self) -> int:
        return self.n_tokens - self.n_prompt

    @property
    def n_layers(self) -> int:
        return self.activations.shape[0]

    @property
    def text(self) -> str:
        """Prompt and generation as text, decoded from the ids."""
        return self.prompt + self.generated

    @property
    def prompt(self) -> str:
        """The prompt as text, decoded from the ids (files of lens 0.1: its tokens joined)."""
        return self.prompt_text or "".join(self.tokens[:self.n_prompt])

    @property
    def generated(self) -> str:
        """The generated text, decoded from the ids (files of lens 0.1: its tokens joined)."""
        return self.generated_text or "".join(self.tokens[self.n_prompt:])

    def by_token(self, per_position: np.ndarray) -> np.ndarray:
        """Values per position -> the value each token is coloured with in the article: an input
        token's own position, and for a generated token the position that produced it (the one
        before), so the last input token and the first generated token share a value."""
        values = np.asarray(per_position)
        if values.ndim < 1 or values.shape[0] != self.n_tokens:
            raise LensError(f"by_token takes one value per position ({self.n_tokens}), not shape {values.shape}")
        source = np.arange(self.n_tokens)
        source[self.n_prompt:] -= 1
        return values[source]

    # --------------------------------------------------------------- logit lens
    def rankings(self) -> np.ndarray:
        """[n_layers, n_generated]: rank (1 = top) of each generated token after each layer."""
        return self.ranks[:, self.n_prompt - 1:self.n_tokens - 1]

    def layer_predictions(self, position: int | None = None, k: int | None = None) -> list[list[tuple[str, float]]]:
        """Top-k (token, probability) after each layer at `position` (default: the last prompt
        position, which predicts the first generated token)."""
        pos = self.n_prompt - 1 if position is None else position
        if not _integer(pos) or not 0 <= pos < self.n_tokens:
            raise LensError(f"position {pos!r} is not an integer in 0..{self.n_tokens - 1}")
        stored = self.top_ids.shape[-1]
        k = stored if k is None else k
        if not _integer(k) or not 1 <= k <= stored:
            raise LensError(f"k must be an integer in 1..{stored} (the lens_top_k explained with), not {k!r}")
        return [[(self.top_tokens[l][pos][j], float(self.top_probs[l, pos, j])) for j in range(k)]
                for l in range(self.n_layers)]

    def watch(self, token: str, explainer=None) -> np.ndarray:
        """[n_layers, n_tokens]: rank of `token` after each layer at each position. Tokens passed to
        explain(watch=...) are stored; for any other, pass the `lens.Explainer` of the model."""
        if token in self.watched:
            return self.watched[token]
        if explainer is None:
            raise LensError(f"{token!r} was not watched when explaining: pass the model's lens.Explainer, "
                            f"or explain again with watch=[{token!r}]")
        return explainer.watch_ranks(self.hidden_states, self.token_ids, [token])[token]

    def next_tokens(self) -> np.ndarray:
        """[n_tokens] the token each position predicts (the last position: itself, as a placeholder)."""
        return next_tokens(self.token_ids)

    # --------------------------------------------------------------- neurons
    def factors(self, k: int = 5, layers=None, method: str = "nmf", seed: int = 0, include_first: bool = False):
        """NMF (or PCA) of the MLP activations of `layers` into k factors. The first position is left
        out unless `include_first`: attention-sink neurons fire there (on SmolLM2 it carries ~99% of
        the squared activation), and a factorisation that includes it spends a factor on it."""
        from .analysis.neurons import factorize

        exclude = {} if include_first else {0: self.first_position_note()}
        return factorize(self.activations.astype(np.float32), k, layers, method, seed, exclude=exclude)

    def factor_saliency_for(self, factors) -> np.ndarray | None:
        """The factor saliency [k, n, n] if it was computed for these factors (same count, layers and
        positions factorised), else None."""
        asked = self.settings.get("factor_saliency") or {}
        same = (self.factor_saliency.shape[0] == factors.k and asked.get("layers") == list(factors.layers)
                and asked.get("positions") == [int(p) for p in factors.positions])
        return self.factor_saliency if same else None

    def first_position_note(self) -> str:
        bos = "the BOS token, " if self.settings.get("bos") else ""
        return f"left out: {bos}the first position, where attention-sink neurons fire whatever the text"

    def clusters(self, k: int = 8, layers=None, seed: int = 0):
        from .analysis.neurons import cluster_neurons
        return cluster_neurons(self.activations.astype(np.float32), k, layers, seed)

    # --------------------------------------------------------------- persistence
    def save(self, path, compress: bool = False) -> Path:
        """One .npz file (`lens.persist`); `compress=True` stores hidden states and activations as float16."""
        from . import persist
        return persist.save(self, path, compress)

    @classmethod
    def load(cls, path) -> Explanation:
        """Read a saved file; a file that is not a complete, consistent explanation is refused."""
        from . import persist
        return persist.load(cls, path)

    def faithfulness(self) -> dict:
        """{method: (AOPC most-relevant-first, AOPC least-relevant-first)} computed when explaining with
        faithfulness=True, `random` the control: a method worth believing has a high first and a low second."""
        f = self.aopc
        if not f:
            raise LensError("faithfulness was not measured: explain with faithfulness=True (--faithfulness)")
        return {m: (v["aopc_morf"], v["aopc_lerf"]) for m, v in f.items()}

    # --------------------------------------------------------------- tables
    def to_dict(self) -> dict:
        """Plain JSON-able results: text, tokens, each generated token's probability, every method's
        attribution rows, logit-lens ranks, watched ranks, warnings, settings and timings (and what an
        intervention changed, and the causal factors, where computed)."""
        gen = slice(self.n_prompt - 1, self.n_tokens - 1)
        return {"model": self.model_name, "prompt": self.prompt, "generated": self.generated,
                "tokens": self.tokens, "token_ids": self.token_ids.tolist(), "n_prompt": self.n_prompt,
                "probabilities": self.probabilities.tolist(),
                "attributions": {m: a.tolist() for m, a in self.attributions.items()},
                "rankings": self.rankings().tolist(),
                "watched": {w: r[:, gen].tolist() for w, r in self.watched.items()},
                "warnings": self.warnings(), "settings": self.settings, "timings": self.timings,
                "aopc": self.aopc, "ig_completeness_error": self.ig_completeness_error, "devices": self.devices,
                "family": self.family,
                **({"factor_saliency": self.factor_saliency.tolist()} if self.factor_saliency.size else {}),
                **({"what_if": self.what_if} if self.what_if else {}),
                **({"causal_factors": self.causal_factors.tolist()} if self.causal_factors.size else {})}

    def to_pandas(self):
        """Long format, one row per (generated token, earlier token, method): generated_position,
        generated_token, input_position, input_token, method, score."""
        pd = _pandas()

        rows = []
        for m, a in self.attributions.items():
            for t in range(self.n_generated):
                g = self.n_prompt + t
                rows += [(g, self.tokens[g], j, self.tokens[j], m, float(a[t, j])) for j in range(g)]
        return pd.DataFrame(rows, columns=["generated_position", "generated_token", "input_position",
                                           "input_token", "method", "score"])

    def rankings_frame(self):
        """Long format: layer (1-based, after that block), generated_position, token, rank."""
        pd = _pandas()

        r = self.rankings()
        rows = [(l + 1, self.n_prompt + t, self.tokens[self.n_prompt + t], int(r[l, t]))
                for l in range(r.shape[0]) for t in range(r.shape[1])]
        return pd.DataFrame(rows, columns=["layer", "generated_position", "token", "rank"])

    # --------------------------------------------------------------- display
    def compare(self, other: Explanation, method: str | None = None, other_method: str | None = None):
        """This explanation's attribution (`method`, default its first) against `other`'s (`other_method`,
        default the same method, else its first): two methods (`expl.compare(expl, "grad_x_input",
        "attnlrp")`), two prompts, two models, a run with and without an intervention. Returns an
        `analysis.compare.Comparison`: `.to_dict()`, `.order()` (most disagreeing pairs first); write its
        page with `lens.viz.compare.save_comparison(cmp, path)` or `lens compare a.npz b.npz -o diff.html`."""
        from .analysis.compare import compare
        if not isinstance(other, Explanation):
            raise LensError(f"compare takes another lens Explanation, not {type(other).__name__}")
        return compare(self, other, method, other_method)

    def layout(self, **kw):
        """All views as one Bokeh layout (embed it in any Bokeh document or server app)."""
        from .viz import report_layout
        return report_layout(self, **kw)

    def show(self, **kw):
        """Display the views inline in Jupyter (or open them in a browser outside it)."""
        from bokeh.io import output_notebook, show
        from bokeh.resources import INLINE

        try:
            get_ipython  # noqa: F821, B018 - defined inside IPython only
            if not _NOTEBOOK["ready"]:  # BokehJS (~4 MB inline) goes into the notebook once per kernel
                output_notebook(INLINE, hide_banner=True)
                _NOTEBOOK["ready"] = True
        except NameError:
            pass
        show(self.layout(**kw))

    def _repr_html_(self) -> str:
        """Rich display: the standalone report in a sandboxed iframe (offline, isolated scripts)."""
        import html

        from .viz import report_html
        return (f'<iframe sandbox="allow-scripts" style="width:100%;height:900px;border:0" '
                f'srcdoc="{html.escape(report_html(self), quote=True)}"></iframe>')

    def report(self, path, **kw):
        """Write the standalone HTML report."""
        from .viz import save_report
        return save_report(self, path, **kw)

    def sink_methods(self, share: float = 0.9) -> list[str]:
        """The attribution methods that put more than `share` of the mean row on the first position
        (the attention sink; attention rollout compounds it over the layers to ~100 %)."""
        return [m for m, a in self.attributions.items()
                if a.shape[0] and a.shape[1] > 1 and float(np.mean(a[:, 0])) > share]

    def warnings(self) -> list[str]:
        """Caveats a reader of these results should see."""
        out = [f"{m} puts {float(np.mean(self.attributions[m][:, 0])):.1%} of each row on the first position "
               f"(the attention sink): the other positions' shares are real but small; the saliency view "
               f"scales its colours over them" for m in self.sink_methods()]
        from .analysis.faithfulness import no_method_note
        note = no_method_note(self.aopc) if self.aopc else None
        if note:
            out.append(note)
        err = self.ig_completeness_error
        if err is not None and err > 0.05:
            out.append(f"integrated gradients is {err:.0%} away from completeness (sum of attributions vs "
                       f"f(input) - f(baseline)): its scores are unreliable here. On the straight path from "
                       f"the baseline the output crosses near-jumps that {self.settings.get('ig_steps')} points "
                       f"cannot integrate (more --ig-steps help; SmolLM2 needs ~256); prefer grad_x_input "
                       f"or attnlrp.")
        return out

    def summary(self) -> str:
        lines = [f"model: {self.model_name}", f"prompt: {self.prompt!r}", f"generated: {self.generated!r}"]
        if self.what_if:  # what an intervention changed
            lines += [f"intervention: {'; '.join(self.what_if['interventions'])}",
                      f"unedited model: {self.what_if['original_text']!r}"]
        lines += [f"warning: {w}" for w in self.warnings()]
        for t in range(self.n_generated):
            tok = self.tokens[self.n_prompt + t]
            parts = [f"{tok!r:>16} p={self.probabilities[t]:.3f}"]
            for m, a in self.attributions.items():
                top = int(np.argmax(a[t]))
                parts.append(f"{m}: {self.tokens[top]!r} ({a[t, top]:.0%})")
            lines.append("  ".join(parts))
        return "\n".join(lines)


_NOTEBOOK = {"ready": False}


def _pandas():
    try:
        import pandas
    except ImportError:
        raise LensError("tables need pandas: pip install 'lens-explain[tables]'") from None
    return pandas


def _same_array(a, b) -> bool:
    return np.shape(a) == np.shape(b) and np.array_equal(a, b)


def next_tokens(token_ids: np.ndarray) -> np.ndarray:
    """The token each position predicts: the following one (the last position repeats itself)."""
    return np.append(token_ids[1:], token_ids[-1])


def _integer(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
