"""Every user-facing choice and default in one place: the API (`Explainer.explain`), the CLI and
`lens serve` all read them from here, and all validate through here, so a bad value gets the same
one-line error wherever it comes from."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

from . import methods as M
from . import sampling
from .errors import LensError
from .methods import TARGETS  # noqa: F401 - where callers have always found it

DEFAULT_MODEL = "smollm2"  # the one trained model that installs offline (`lens export smollm2`)
BOS_CHOICES = ("auto", "yes", "no")
DTYPES = ("float32", "float16", "bfloat16")  # `lens export --dtype`: float32 unless a GPU needs half
FACTORIZATIONS = ("nmf", "pca")
DEFAULT_FACTORS = 5           # NMF factors in the report (fewer for a shorter sequence)
HEATMAP_NEURONS = 64          # most active neurons the report's heatmap shows
HEATMAP_CLUSTERS = 6
MAX_IG_STEPS = 1024
MAX_PATTERN_VALUES = 20_000_000  # the head view's [L, H, n, n]: SmolLM2 at ~270 tokens (40 MB in float16)


def check_attention_size(n_layers: int, n_heads: int, n: int) -> None:
    """Refuse (before any slow work) a head view too large to keep and ship in a page."""
    values = n_layers * n_heads * n * n
    if values > MAX_PATTERN_VALUES:
        raise LensError(f"every head's attention over {n} tokens is {values:,} numbers, more than the head view "
                        f"takes ({MAX_PATTERN_VALUES:,}): explain a shorter text, or without --attention")


def opt(default, help: str, flag: str | None = None, **argparse_kw):
    """A settings field with what the CLI needs to offer it (`lens.cli.options` builds the options from
    these): its help, its flag (default: --field-name), and argparse's choices, metavar, ..."""
    return field(default=default, metadata={"help": help, "flag": flag, **argparse_kw})


def _int(name, v, low=None, high=None, optional=False):
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise LensError(f"{name} must be an integer, not {v!r}")
    if (low is not None and v < low) or (high is not None and v > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise LensError(f"{name} must be {bounds}, not {v}")


def _float(name, v, ok, what, optional=False):
    if v is None and optional:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or not ok(v):
        raise LensError(f"{name} must be {what}, not {v!r}")


@dataclass(frozen=True)
class ExplainSettings:
    """What `explain` does: how to generate, which attributions, what the logit lens follows."""
    max_new_tokens: int = opt(20, "tokens to generate; 0 explains the prompt as a text (logit lens and factors, "
                                  "no attribution)")
    methods: tuple = opt(("grad_x_input",), "attribution method (repeatable); none: `methods=()` in the API, "
                         "--no-attribution on the command line", "--method", choices=M.names)
    target: str = opt("logit", "differentiate the token's logit (the article) or its probability (Ecco 0.1)",
                      choices=lambda: TARGETS)
    sample: bool = opt(False, "sample instead of greedy decoding")
    temperature: float = opt(1.0, "sampling temperature")
    top_k: int | None = opt(None, "sample among the k most likely tokens")
    top_p: float | None = opt(None, "sample among the most likely tokens holding this much probability")
    seed: int | None = opt(None, "sampling seed (the same seed gives the same tokens)")
    watch: tuple = opt((), "a token whose rank to follow across layers (repeatable; a string of several tokens is "
                       "followed by its first)")
    foil: str | None = opt(None, "for --method contrastive: the token to explain against, e.g. ' 16'")
    ig_steps: int = opt(16, "integrated-gradients path points (cost: ~1x grad_x_input each)")
    ig_baseline: str = opt(" ", "integrated gradients' baseline at every position but the first (which keeps its "
                           "own): zero, the mean embedding, pad (the end-of-text token), or a text of one token",
                           "--baseline", metavar="zero|mean|pad|TOKEN")
    lens_top_k: int = opt(10, "logit-lens candidates kept per layer and position")
    chat: bool = opt(False, "wrap the prompt in the model's chat template (instruct models)")
    continuation: str | tuple | None = opt(None, "explain this continuation of the prompt instead of generating one "
                                           "(forced decoding; --max-new-tokens and sampling do not apply)")
    attention: bool = opt(False, "also keep every head's attention probabilities, for the head view (hover a token "
                          "to paint what it attends to, per layer and head)")
    faithfulness: bool = opt(False, "measure each method's AOPC (masking the earlier tokens it ranks highest / "
                             "lowest) against a random ranking; shown beside the method menu")

    def __post_init__(self):
        # normalise sequences given as lists or single strings, then check every value
        for name in ("methods", "watch"):
            v = getattr(self, name)
            object.__setattr__(self, name, (v,) if isinstance(v, str) else tuple(dict.fromkeys(v or ())))
        _int("max_new_tokens", self.max_new_tokens, 0)
        chosen = [M.get(m) for m in self.methods]
        if self.target not in TARGETS:
            raise LensError(f"unknown attribution target {self.target!r}; choose from {', '.join(TARGETS)}")
        sampling.check(self.temperature, self.top_k, self.top_p)
        _int("seed", self.seed, 0, 2 ** 63 - 1, optional=True)
        _int("ig_steps", self.ig_steps, 1, MAX_IG_STEPS)
        _int("lens_top_k", self.lens_top_k, 1, 100)
        if not isinstance(self.ig_baseline, str) or not self.ig_baseline:
            raise LensError(f"the baseline must be zero, mean, pad or a one-token text, not {self.ig_baseline!r}")
        for w in self.watch + ((self.foil,) if self.foil is not None else ()):
            if not isinstance(w, str) or not w:
                raise LensError(f"a watched or foil token must be non-empty text, not {w!r}")
        if isinstance(self.continuation, list):
            object.__setattr__(self, "continuation", tuple(self.continuation))
        if self.continuation is not None and not (isinstance(self.continuation, str) and self.continuation) \
                and not (isinstance(self.continuation, tuple) and self.continuation):
            raise LensError("the continuation must be non-empty text or token ids")
        if self.faithfulness and not (self.methods and (self.max_new_tokens or self.continuation is not None)):
            raise LensError("faithfulness measures attribution methods on generated tokens: it needs both")
        for m in chosen:
            m.check(self.target)
            if m.needs_foil and not self.foil:
                raise LensError(f"the {m.name} method needs --foil TOKEN (the alternative to explain against)")

    def replace(self, **changes) -> ExplainSettings:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise LensError(f"unknown setting {sorted(unknown)[0]!r}")
        return replace(self, **changes)


@dataclass(frozen=True)
class ServeSettings:
    """Caps of `lens serve`: every browser session shares one model and one worker."""
    port: int = opt(5006, "port on 127.0.0.1")
    max_prompt_tokens: int = opt(64, "longest prompt accepted")
    max_new_tokens: int = opt(30, "most tokens a request generates")

    def __post_init__(self):
        _int("port", self.port, 1, 65535)
        _int("max_prompt_tokens", self.max_prompt_tokens, 1)
        _int("max_new_tokens", self.max_new_tokens, 1)


@dataclass(frozen=True)
class CorpusSettings:
    """What `lens corpus` does to every prompt of a corpus (see `lens.corpus`)."""
    max_new_tokens: int = opt(0, "tokens to generate and attribute per prompt; 0 profiles the text itself")
    methods: tuple = opt(("grad_x_input",), "attribution method when generating (repeatable)", "--method",
                         choices=lambda: M.names(batchable=True))
    layers: tuple | None = None           # (first, last) layers profiled, inclusive; None: all (--layers A-B)
    top_k: int = opt(20, "strongest activations kept per neuron and factor")
    factors: int = opt(8, "streaming NMF factors (0: none)")
    batch_size: int = opt(16, "prompts per shard (one padded model call)")
    max_tokens: int = opt(128, "prompts are cut to this many tokens")
    include_first: bool = opt(False, "rank first positions too (left out by default: attention-sink neurons fire there)")

    def __post_init__(self):
        object.__setattr__(self, "methods", (self.methods,) if isinstance(self.methods, str)
                           else tuple(dict.fromkeys(self.methods or ())))
        _int("max_new_tokens", self.max_new_tokens, 0)
        for m in self.methods:
            if m not in M.names(batchable=True):
                raise LensError(f"corpus attribution method {m!r}: choose from {', '.join(M.names(batchable=True))}")
        if self.max_new_tokens and not self.methods:
            raise LensError("choose at least one attribution method")
        _int("top_k", self.top_k, 1, 1000)
        _int("factors", self.factors, 0, 256)
        _int("batch_size", self.batch_size, 1, 4096)
        _int("max_tokens", self.max_tokens, 1)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(v) for v in self.layers))


EXPLAIN = ExplainSettings()
CORPUS = CorpusSettings()
SERVE = ServeSettings()
