"""Logit lens: read each layer's hidden state through the final norm and the unembedding.

Unlike Ecco, which skips the final LayerNorm for intermediate layers, every layer here gets it
(LayerNorm for GPT-2, RMSNorm for Llama: the family adapter's `final_norm`), so the last layer
reproduces the model's real logits exactly (rank 1 for greedy tokens).
"""
from __future__ import annotations

import numpy as np

from .. import families
from ..store import ModelFolder


class LogitLens:
    def __init__(self, final_norm, unembed: np.ndarray):
        self.final_norm = final_norm                  # [n, d] -> [n, d], the model's own final norm
        self.unembed = unembed                        # [d_vocab, d_model]

    @classmethod
    def from_folder(cls, folder: ModelFolder) -> "LogitLens":
        family = families.get(folder.config)
        params, static = family.load_params(folder.weights(), folder.config, blocks=False)
        return cls(lambda h: family.final_norm(h, params, **static), family.unembedding(params))

    def logits(self, hidden: np.ndarray) -> np.ndarray:  # [n, d] -> [n, d_vocab]
        return self.final_norm(hidden.astype(np.float32)) @ self.unembed.T

    def analyse(self, hidden_states: np.ndarray, targets: np.ndarray, top_k: int = 10,
                watch: np.ndarray | None = None) -> dict:
        """For layers 1..n (hidden_states[1:]) and every position: the rank of `targets[pos]`, the top-k
        tokens and probabilities, and the ranks of watched token ids. One layer at a time keeps
        memory at [n_positions, d_vocab] (gpt2-xl: 49 layers x 80 positions fit easily).

        Returns ranks [n_layers, n], top_ids/top_probs [n_layers, n, k], watch_ranks [n_layers, n, w].
        """
        n_layers, n = hidden_states.shape[0] - 1, hidden_states.shape[1]
        watch = np.asarray([] if watch is None else watch, np.int64)
        ranks = np.zeros((n_layers, n), np.int64)
        top_ids = np.zeros((n_layers, n, top_k), np.int64)
        top_probs = np.zeros((n_layers, n, top_k), np.float32)
        watch_ranks = np.zeros((n_layers, n, len(watch)), np.int64)
        rows = np.arange(n)
        for l in range(n_layers):
            z = self.logits(hidden_states[l + 1])                                  # [n, V]
            ranks[l] = (z > z[rows, targets][:, None]).sum(-1) + 1
            if len(watch):
                watch_ranks[l] = (z[:, None, :] > z[:, watch][:, :, None]).sum(-1) + 1
            idx = np.argpartition(-z, top_k - 1, axis=-1)[:, :top_k]
            idx = np.take_along_axis(idx, np.argsort(-np.take_along_axis(z, idx, -1), -1), -1)
            p = np.exp(z - z.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            top_ids[l], top_probs[l] = idx, np.take_along_axis(p, idx, -1)
        return {"ranks": ranks, "top_ids": top_ids, "top_probs": top_probs, "watch_ranks": watch_ranks}
