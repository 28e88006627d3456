"""What the runtime returns: a generation and the full-sequence trace of every tap."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import hooks


@dataclass
class Generation:
    """Prompt plus generated tokens, and the probability the model gave each generated token."""
    token_ids: np.ndarray        # [n_prompt + n_generated] int64
    n_prompt: int
    probabilities: np.ndarray    # [n_generated] p(token) from the untempered distribution
    settings: dict = field(default_factory=dict)
    trace: Trace | None = None  # every tap for every position, when generated with trace=True

    @property
    def generated_ids(self) -> np.ndarray:
        return self.token_ids[self.n_prompt:]


@dataclass
class Trace:
    """Everything one full-sequence pass exposes, batch dimension removed."""
    logits: np.ndarray           # [seq, d_vocab]
    hidden_states: np.ndarray    # [n_layers + 1, seq, d_model]: embeddings, then each block's output
    activations: np.ndarray      # [n_layers, seq, d_mlp]: MLP neurons after the non-linearity
    ln_final: np.ndarray         # [seq, d_model]: last block's output after the final norm


class TraceWriter:
    """A Trace filled as graph calls return, in its final layout: no call's outputs are kept and
    nothing is concatenated or stacked afterwards (each copy of an 8,000-token SmolLM2 trace is 3.6 GB)."""

    def __init__(self, model, n: int):  # model: a lens Model (its n_layers, d_model, d_mlp)
        self.model, self.n, self.filled = model, n, 0
        self.arrays: dict = {}

    def add(self, res: dict) -> None:
        m, first = self.model, self.filled
        seq = res[hooks.EMBED].shape[1]
        if not self.arrays:
            f = res[hooks.EMBED].dtype
            self.arrays = dict(logits=np.empty((self.n, res["logits"].shape[-1]), res["logits"].dtype),
                               hidden=np.empty((m.n_layers + 1, self.n, m.d_model), f),
                               acts=np.empty((m.n_layers, self.n, m.d_mlp), f), ln=np.empty((self.n, m.d_model), f))
        a, s = self.arrays, slice(first, first + seq)
        a["logits"][s] = res["logits"][0]
        a["hidden"][0, s] = res[hooks.EMBED][0]
        for l in range(m.n_layers):
            a["hidden"][l + 1, s] = res[hooks.resid_post(l)][0]
            a["acts"][l, s] = res[hooks.mlp_post(l)][0]
        a["ln"][s] = res[hooks.LN_FINAL][0]
        self.filled += seq

    def trace(self) -> Trace:
        a, f = self.arrays, self.filled
        if f < self.n:  # stopped early (EOS): the filled part, as arrays of their own
            a = {k: np.ascontiguousarray(v[:f] if v.ndim == 2 else v[:, :f]) for k, v in a.items()}
        return Trace(a["logits"], a["hidden"], a["acts"], a["ln"])
