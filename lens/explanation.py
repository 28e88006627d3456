"""`Explanation`: everything lens computed about one generation, as plain numpy arrays plus metadata,
with the analyses as methods. Saved as one .npz file (arrays + a JSON metadata entry) that loads
without the model."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .errors import LensError

_BIG = ("hidden_states", "activations")


@dataclass
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
    settings: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    _model: object = field(default=None, repr=False, compare=False)

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
        return "".join(self.tokens)

    # --------------------------------------------------------------- logit lens
    def rankings(self) -> np.ndarray:
        """[n_layers, n_generated]: rank (1 = top) of each generated token after each layer."""
        return self.ranks[:, self.n_prompt - 1:self.n_tokens - 1]

    def layer_predictions(self, position: int | None = None, k: int | None = None) -> list[list[tuple[str, float]]]:
        """Top-k (token, probability) after each layer at `position` (default: the last prompt
        position, which predicts the first generated token)."""
        pos = self.n_prompt - 1 if position is None else position
        if not 0 <= pos < self.n_tokens:
            raise LensError(f"position {pos} is out of range 0..{self.n_tokens - 1}")
        k = k or self.top_ids.shape[-1]
        return [[(self.top_tokens[l][pos][j], float(self.top_probs[l, pos, j])) for j in range(k)]
                for l in range(self.n_layers)]

    def watch(self, token: str) -> np.ndarray:
        """[n_layers, n_tokens]: rank of `token` after each layer at each position. Tokens passed to
        explain(watch=...) are stored; others need the model (not after load())."""
        if token in self.watched:
            return self.watched[token]
        if self._model is None:
            raise LensError(f"{token!r} was not watched when explaining; explain again with watch=[{token!r}]")
        lens_ = self._model.logit_lens
        tid = self._model.token_id(token)
        out = lens_.analyse(self.hidden_states, self.next_tokens(), top_k=1, watch=[tid])["watch_ranks"][..., 0]
        self.watched[token] = out
        return out

    def next_tokens(self) -> np.ndarray:
        """[n_tokens] the token each position predicts (the last position: itself, as a placeholder)."""
        return next_tokens(self.token_ids)

    # --------------------------------------------------------------- neurons
    def factors(self, k: int = 5, layers=None, method: str = "nmf", seed: int = 0):
        from .analysis.neurons import factorize
        return factorize(self.activations.astype(np.float32), k, layers, method, seed)

    def clusters(self, k: int = 8, layers=None, seed: int = 0):
        from .analysis.neurons import cluster_neurons
        return cluster_neurons(self.activations.astype(np.float32), k, layers, seed)

    # --------------------------------------------------------------- persistence
    def save(self, path, compress: bool = False) -> Path:
        """One .npz file; `compress=True` stores hidden states and activations as float16."""
        path = Path(path)
        arrays = {"token_ids": self.token_ids, "probabilities": self.probabilities, "ranks": self.ranks,
                  "top_ids": self.top_ids, "top_probs": self.top_probs}
        for name in _BIG:
            a = getattr(self, name)
            arrays[name] = a.astype(np.float16) if compress else a
        for k, v in self.attributions.items():
            arrays[f"attribution/{k}"] = v
        for k, v in self.signed.items():
            arrays[f"signed/{k}"] = v
        for k, v in self.watched.items():
            arrays[f"watched/{k}"] = v
        meta = {"format": 1, "lens_version": __version__, "model_name": self.model_name,
                "tokens": self.tokens, "n_prompt": self.n_prompt, "top_tokens": self.top_tokens,
                "settings": self.settings, "timings": self.timings, "compressed": compress,
                "watched": list(self.watched), "methods": list(self.attributions), "signed": list(self.signed)}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        tmp = path.with_name(path.name + ".tmp.npz")
        try:
            np.savez_compressed(tmp, **arrays)
            tmp.replace(path)
        except OSError as e:
            raise LensError(f"cannot write {path}: {e.strerror}") from None
        return path

    @classmethod
    def load(cls, path) -> "Explanation":
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["meta"]).decode())
                get = lambda k: z[k]
                return cls(
                    model_name=meta["model_name"], token_ids=get("token_ids"), tokens=meta["tokens"],
                    n_prompt=meta["n_prompt"], probabilities=get("probabilities"),
                    attributions={k: get(f"attribution/{k}") for k in meta["methods"]},
                    hidden_states=get("hidden_states"), activations=get("activations"), ranks=get("ranks"),
                    top_ids=get("top_ids"), top_probs=get("top_probs"),
                    watched={k: get(f"watched/{k}") for k in meta["watched"]},
                    signed={k: get(f"signed/{k}") for k in meta["signed"]},
                    top_tokens=meta["top_tokens"], settings=meta["settings"], timings=meta["timings"])
        except FileNotFoundError:
            raise LensError(f"{path} does not exist") from None
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise LensError(f"{path} is not a lens explanation file ({e.__class__.__name__})") from None

    # --------------------------------------------------------------- display
    def layout(self, **kw):
        """All views as one Bokeh layout (embed it in any Bokeh document or server app)."""
        from .viz import report_layout
        return report_layout(self, **kw)

    def show(self, **kw):
        """Display the views inline in Jupyter (or open them in a browser outside it)."""
        from bokeh.io import output_notebook, show
        from bokeh.resources import INLINE

        try:
            get_ipython  # noqa: F821 - defined inside IPython only
            output_notebook(INLINE, hide_banner=True)
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

    def warnings(self) -> list[str]:
        """Caveats a reader of these results should see."""
        out = []
        err = self.settings.get("ig_completeness_error")
        if err is not None and err > 0.05:
            out.append(f"integrated gradients is {err:.0%} away from completeness (sum of attributions vs "
                       f"f(input) - f(baseline)): its scores are unreliable here. Models whose normalisation "
                       f"makes the output jump at the zero baseline (Llama: RMSNorm, no biases) do this "
                       f"whatever the number of steps; prefer grad_x_input.")
        return out

    def summary(self) -> str:
        gen = "".join(self.tokens[self.n_prompt:])
        lines = [f"model: {self.model_name}", f"prompt: {''.join(self.tokens[:self.n_prompt])!r}",
                 f"generated: {gen!r}"] + [f"warning: {w}" for w in self.warnings()]
        for t in range(self.n_generated):
            tok = self.tokens[self.n_prompt + t]
            parts = [f"{tok!r:>16} p={self.probabilities[t]:.3f}"]
            for m, a in self.attributions.items():
                top = int(np.argmax(a[t]))
                parts.append(f"{m}: {self.tokens[top]!r} ({a[t, top]:.0%})")
            lines.append("  ".join(parts))
        return "\n".join(lines)


def next_tokens(token_ids: np.ndarray) -> np.ndarray:
    """The token each position predicts: the following one (the last position repeats itself)."""
    return np.append(token_ids[1:], token_ids[-1])


def explain(model, prompt, max_new_tokens: int = 20, methods=("grad_x_input",), sample: bool = False,
            temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
            seed: int | None = None, watch=(), foil: str | None = None, target: str = "logit",
            ig_steps: int = 64, lens_top_k: int = 10, progress=None) -> Explanation:
    """Generate, trace every tap, attribute every generated token, and read the logit lens."""
    from .grad import METHODS

    say = progress or (lambda msg: None)
    methods = list(dict.fromkeys(methods))
    for m in methods:
        if m not in METHODS:
            raise LensError(f"unknown attribution method {m!r}; choose from {', '.join(METHODS)}")
    if "contrastive" in methods and not foil:
        raise LensError("the contrastive method needs --foil TOKEN (the alternative to explain against)")
    watch_ids = [model.token_id(w) for w in watch]
    foil_id = model.token_id(foil) if foil else None
    timings, diagnostics = {}, {}

    t = time.perf_counter()
    say("generating")
    gen = model.generate(prompt, max_new_tokens, sample=sample, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed, trace=True)
    timings["generate"] = time.perf_counter() - t
    if gen.n_prompt == len(gen.token_ids):
        raise LensError("no token was generated (max_new_tokens is 0)")

    attributions, signed = {}, {}
    for m in methods:
        t = time.perf_counter()
        say(f"attributing ({m})")
        a = model.attributor.attribute(gen.token_ids, gen.n_prompt, method=m, target=target,
                                       foils=foil_id, steps=ig_steps)
        attributions[m] = a.scores
        if a.signed is not None:
            signed[m] = a.signed
        if a.baseline_values is not None:  # integrated gradients: how far from complete the path sum is
            diagnostics["ig_completeness_error"] = float(a.completeness_error().max())
        timings[f"attribution/{m}"] = time.perf_counter() - t

    t = time.perf_counter()
    say("logit lens")
    tr = gen.trace
    k = min(lens_top_k, model.d_vocab)
    ll = model.logit_lens.analyse(tr.hidden_states, next_tokens(gen.token_ids), top_k=k, watch=watch_ids)
    timings["logit_lens"] = time.perf_counter() - t
    top_tokens = [[model.token_strings(row) for row in layer] for layer in ll["top_ids"]]
    settings = dict(gen.settings, methods=methods, target=target, foil=foil, ig_steps=ig_steps,
                    prompt=prompt if isinstance(prompt, str) else None, **diagnostics)
    return Explanation(
        model_name=model.name, token_ids=gen.token_ids, tokens=model.token_strings(gen.token_ids),
        n_prompt=gen.n_prompt, probabilities=gen.probabilities, attributions=attributions,
        hidden_states=tr.hidden_states, activations=tr.activations, ranks=ll["ranks"],
        top_ids=ll["top_ids"], top_probs=ll["top_probs"],
        watched={w: ll["watch_ranks"][..., i] for i, w in enumerate(watch)}, signed=signed,
        top_tokens=top_tokens, settings=settings, timings=timings, _model=model)
