"""Logit lens: read each layer's hidden state through the final norm and the unembedding.

Unlike Ecco, which skips the final LayerNorm for intermediate layers, every layer here gets it
(the family's own: LayerNorm, RMSNorm, Gemma's 1 + w), and the logits are the family's (an
unembedding bias, Granite's scale, Gemma 2's soft-capping), so the last layer reproduces the model's
real logits exactly (rank 1 for greedy tokens).

Every layer's rows go through one compiled XLA function in blocks of rows: one GEMM against the
unembedding per block (rather than one per layer, which re-read the 113 MB unembedding of SmolLM2 30
times), with the ranks, top-k and the log-sum-exp for probabilities read from the logits while they
are in memory (numpy's argpartition over 49,152 columns per row cost more than the GEMM).
"""
from __future__ import annotations

import functools

import numpy as np

from .. import families
from ..store import ModelFolder


# (layer, position) rows per block. On a CPU a [48, d_vocab] float32 block (9 MB for SmolLM2) stays in
# the cache between the GEMM and the reads: 1320 rows of SmolLM2 took 0.72 s at 48 rows, 0.95 s at 256.
# A GPU wants bigger GEMMs.
CPU_ROWS, DEVICE_ROWS = 48, 256


@functools.cache
def _reader(k: int, arch):
    """Jitted block reader: normalised hidden states [R, d] -> ranks of targets [R], ranks of watched
    ids [R, W], top-k ids [R, k] and their probabilities [R, k]. The logits are the family's own
    (`decoder.logits`: an unembedding bias, a logit scale, soft-capping)."""
    import jax
    import jax.numpy as jnp

    from ..families import decoder

    def read(h, head, targets, watch):
        z = decoder.logits(h, head, arch)                                     # [R, V] logits
        ranks = (z > jnp.take_along_axis(z, targets[:, None], 1)).sum(-1) + 1  # [R]
        watched = jax.lax.map(lambda c: (z > c[:, None]).sum(-1) + 1, z[:, watch].T).T  # [R, W], one at a time
        top, ids = jax.lax.top_k(z, k)                                        # [R, k], sorted
        probs = jnp.exp(top - jax.nn.logsumexp(z, axis=-1, keepdims=True))
        return ranks, watched, ids, probs

    return jax.jit(read)


class LogitLens:
    def __init__(self, arch, params: dict):
        from ..families import decoder

        self.arch = arch                              # families.decoder.Arch: the final norm and logits' flags
        self.params = params                          # embeddings, final norm, unembedding (no blocks)
        self.unembed = decoder.unembedding(params)    # [d_vocab, d_model]

    @classmethod
    def from_folder(cls, folder: ModelFolder) -> LogitLens:
        return cls(*families.load(folder.config, folder.weights(), blocks=False))

    def final_norm(self, hidden: np.ndarray) -> np.ndarray:  # [n, d] -> [n, d], the model's own final norm
        from ..families import decoder
        return decoder.final_norm(hidden, self.params, self.arch)

    def logits(self, hidden: np.ndarray) -> np.ndarray:  # [n, d] -> [n, d_vocab]
        from ..families import decoder
        return np.asarray(decoder.logits(self.final_norm(hidden.astype(np.float32)), self.params, self.arch))

    @functools.cached_property
    def unembed_device(self):
        """The unembedding as a JAX array; an engine that already holds one (the attributor) may set it."""
        import jax
        return jax.device_put(np.asarray(self.unembed, np.float32))

    def analyse(self, hidden_states: np.ndarray, targets: np.ndarray, top_k: int = 10,
                watch: np.ndarray | None = None) -> dict:
        """For layers 1..n (hidden_states[1:]) and every position: the rank of `targets[pos]`, the top-k
        tokens and probabilities, and the ranks of watched token ids. Rows go in blocks, so
        memory stays at [block, d_vocab] (gpt2-xl: 49 layers x 80 positions fit easily).

        Returns ranks [n_layers, n], top_ids/top_probs [n_layers, n, k], watch_ranks [n_layers, n, w].
        """
        import jax

        n_layers, n, d = hidden_states.shape[0] - 1, hidden_states.shape[1], hidden_states.shape[2]
        watch = np.asarray([] if watch is None else watch, np.int32)
        h = self.final_norm(hidden_states[1:].reshape(-1, d).astype(np.float32))   # [L * n, d]
        tg = np.tile(np.asarray(targets, np.int32), n_layers)                      # [L * n]
        read, rows = _reader(top_k, self.arch), len(h)
        head = {"W_U": self.unembed_device, **({"b_U": self.params["b_U"]} if "b_U" in self.params else {})}
        block_rows = CPU_ROWS if jax.devices()[0].platform == "cpu" else DEVICE_ROWS
        size = min(block_rows, -(-rows // 16) * 16)    # a few block shapes: compiled once each
        out = []
        with jax.default_matmul_precision("highest"):
            for r0 in range(0, rows, size):
                block, m = h[r0:r0 + size], min(size, rows - r0)
                if m < size:                           # pad the last block to the compiled shape
                    block = np.concatenate([block, np.zeros((size - m, d), np.float32)])
                    t = np.concatenate([tg[r0:], np.zeros(size - m, np.int32)])
                else:
                    t = tg[r0:r0 + size]
                out.append((m, read(block, head, t, watch)))
        ranks, watched, ids, probs = (np.concatenate([np.asarray(o[1][i])[:o[0]] for o in out]) for i in range(4))
        return {"ranks": ranks.reshape(n_layers, n).astype(np.int64),
                "top_ids": ids.reshape(n_layers, n, top_k).astype(np.int64),
                "top_probs": probs.reshape(n_layers, n, top_k).astype(np.float32),
                "watch_ranks": watched.reshape(n_layers, n, len(watch)).astype(np.int64)}
