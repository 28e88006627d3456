"""What the runtime returns: a generation and the full-sequence trace of every tap."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
