"""Logit lens: read each layer's hidden state through the final norm and the unembedding.

Unlike Ecco, which skips the final LayerNorm for intermediate layers, every layer here gets it
(LayerNorm for GPT-2, RMSNorm for Llama), so the last layer reproduces the model's real logits
exactly (rank 1 for greedy tokens).
"""
from __future__ import annotations

import numpy as np


class LogitLens:
    def __init__(self, norm_g: np.ndarray, norm_b: np.ndarray | None, unembed: np.ndarray, eps: float = 1e-5,
                 norm: str = "layernorm"):
        self.norm_g, self.norm_b, self.eps, self.norm = norm_g, norm_b, eps, norm
        self.unembed = unembed                        # [d_vocab, d_model]

    @classmethod
    def from_folder(cls, folder) -> "LogitLens":
        from .. import weights
        from ..architectures import dims

        w, cfg = weights.load(str(folder)), weights.config(str(folder))
        shape = dims(cfg)
        if shape["architecture"] == "gpt2":
            return cls(w["transformer.ln_f.weight"], w["transformer.ln_f.bias"], w["transformer.wte.weight"],
                       shape["norm_eps"], "layernorm")
        unembed = w.get("lm_head.weight", w["model.embed_tokens.weight"])  # tied unless stored apart
        return cls(w["model.norm.weight"], None, unembed, shape["norm_eps"], "rmsnorm")

    def normalize(self, hidden: np.ndarray) -> np.ndarray:  # [n, d] -> [n, d], the model's final norm
        h = hidden.astype(np.float32)
        if self.norm == "rmsnorm":
            return self.norm_g * h / np.sqrt((h ** 2).mean(-1, keepdims=True) + self.eps)
        mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
        return self.norm_g * (h - mu) / np.sqrt(var + self.eps) + self.norm_b

    def logits(self, hidden: np.ndarray) -> np.ndarray:  # [n, d] -> [n, d_vocab]
        return self.normalize(hidden) @ self.unembed.T

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
