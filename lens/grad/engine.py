"""The engine under every gradient method: one forward pass over a (bucketed) sequence, then one
vector-Jacobian product vmapped over identity cotangents gives the gradients of all selected scores at
once, instead of a forward and backward per token. Shapes are bucketed so a process compiles once per
bucket, and compiled code is kept in a persistent cache across processes; targets run in chunks whose
size the memory model bounds (`Attributor.rows_per_chunk`)."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import LensError
from ..families import decoder
from ..families.decoder import KEEP_ALL, Memory
from ..families.rules import GRADIENT

SEQ_BUCKET = 8    # sequence lengths are padded up to a multiple of this
ROW_BUCKET = 4    # target rows per chunk are padded up to a multiple of this
CHUNK_ROWS = 8    # rows per chunk: small chunks run on short prefixes (measured: 8 beats 20-in-one by
                  # ~20% for 20 + 20 tokens on distilgpt2's shape), the memory budget may lower it
STEP_CHUNK = 8    # integrated-gradients path points evaluated together
BATCH_ROWS = 32   # target rows (over all sequences) in one call of attribute_batch
DEFAULT_MEMORY_BUDGET = 4 << 30  # bytes the backward passes of one chunk may keep (LENS_GRAD_MEMORY)
# What one row's VJP keeps alive, per layer and position, in float32 values: the block's vectors
# (residual, norms, attention input/output, q/k/v: ~8 x d_model), the MLP's (~4 x d_mlp), and the
# attention maps (~3 x n_heads x seq: scores, softmax, its cotangent).
RESIDUAL_VECTORS, MLP_VECTORS, ATTENTION_MAPS, BYTES_PER_VALUE = 8, 4, 3, 4
QUERY_BLOCK = 512  # queries per attention block when even one row's backward would not fit otherwise


class Chunk(NamedTuple):
    """Target rows attributed together, on the prefix of `length` positions they need."""
    rows: np.ndarray       # generated-token indices
    length: int            # bucketed sequence length
    padded_rows: int       # bucketed row count
    memory: Memory = KEEP_ALL


def memory_plan(budget: int, n_layers: int, d_model: int, d_mlp: int, n_heads: int, n: int) -> tuple[int, Memory]:
    """(target rows per chunk, how the forward keeps its values) for gradients over n positions
    within `budget` bytes. Everything kept while it fits one row; beyond that (SmolLM2 past ~1,000
    tokens: 17.9 GB at 2,000 before) only each layer's input is kept and the rest recomputed, and
    attention runs in blocks of queries. A LensError if even that does not fit."""
    per_position = RESIDUAL_VECTORS * d_model + MLP_VECTORS * d_mlp
    keep_all = BYTES_PER_VALUE * n_layers * n * (per_position + ATTENTION_MAPS * n_heads * n)
    if keep_all <= budget:
        return int(min(CHUNK_ROWS, budget // keep_all)), KEEP_ALL
    block = QUERY_BLOCK if n > QUERY_BLOCK else 0
    layer = BYTES_PER_VALUE * n * (per_position + ATTENTION_MAPS * n_heads * (block or n))  # one layer, one row
    shared = BYTES_PER_VALUE * n_layers * n * d_model + layer       # every layer's input, one layer recomputed
    rows = (budget - shared) // layer
    if rows < 1:
        raise LensError(f"attributing {n} tokens needs about {_size(shared + layer)}, more than the gradient "
                        f"memory budget of {_size(budget)}: raise LENS_GRAD_MEMORY (bytes) or shorten the prompt")
    return int(min(CHUNK_ROWS, rows)), Memory(remat_layers=True, query_block=block)


def enable_compilation_cache(path: str | os.PathLike | None = None) -> Path:
    """Keep compiled XLA code on disk so a new process does not compile again."""
    import jax

    path = Path(path or os.environ.get("LENS_JAX_CACHE") or Path.home() / ".cache" / "lens" / "jax")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return path  # read-only home: run without the cache
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def _bucket(n: int, size: int, cap: int | None = None) -> int:
    b = max(size, -(-n // size) * size)
    return min(b, cap) if cap else b


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


@functools.cache
def _compiled(arch, target: str, contrastive: bool, rules=GRADIENT, batched: bool = False, mem: Memory = KEEP_ALL):
    """Jitted (gradients, values) for one scoring rule on one architecture (`families.decoder.Arch`).

    gradients(params, x [L,d], baseline [L,d], positions [C], targets [C], foils [C], alphas [S],
    weights [S]) -> (values [S, C], path-weighted gradient [C, L, d]);
    values(params, x [L,d], positions [C], targets [C], foils [C]) -> [C].
    `rules`: the backward rules (`families.rules`: plain gradients or AttnLRP's).
    `batched`: the same over a leading axis of B sequences (x, baseline, positions, targets, foils
    and the results gain it; the path is shared), one call for all of them. `mem`: what the forward
    keeps for the backward pass (`memory_plan`).
    """
    import jax
    import jax.numpy as jnp

    def score(h, params, tokens):  # [C, d] hidden states -> [C] score of one token each (the family's logits)
        if target == "logit":
            return decoder.logits(h, params, arch, tokens, rules)
        probs = jax.nn.softmax(decoder.logits(h, params, arch, rules=rules), axis=-1)
        return jnp.take_along_axis(probs, tokens[:, None], axis=-1)[:, 0]

    def values(params, x, positions, targets, foils):  # [L, d] -> [C]
        h = decoder.final_hidden(x, params, arch, rules, mem)[positions]
        s = score(h, params, targets)
        return s - score(h, params, foils) if contrastive else s

    def gradients(params, x, baseline, positions, targets, foils, alphas, weights):
        rows = jnp.eye(positions.shape[0], dtype=x.dtype)

        def at(alpha):  # one forward, then every row's gradient through one vmapped VJP
            vals, pullback = jax.vjp(lambda e: values(params, e, positions, targets, foils),
                                     baseline + alpha * (x - baseline))
            return vals, jax.vmap(pullback)(rows)[0]  # [C], [C, L, d]

        vals, grads = jax.lax.map(at, alphas)  # path points one after another: memory stays flat
        return vals, jnp.tensordot(weights, grads, axes=1)

    if batched:
        return (jax.jit(jax.vmap(gradients, in_axes=(None, 0, 0, 0, 0, 0, None, None))),
                jax.jit(jax.vmap(values, in_axes=(None, 0, 0, 0, 0))))
    return jax.jit(gradients), jax.jit(values)


def in_place(arrays, device_arrays) -> bool:
    """Whether JAX uses every numpy array's memory in place (CPU, 64-byte aligned, as
    `jax.device_put` does for an exported model's mapped weights) rather than a copy."""
    import jax

    pairs = zip(jax.tree_util.tree_leaves(arrays), jax.tree_util.tree_leaves(device_arrays))
    try:
        return all(np.asarray(a).ctypes.data == d.unsafe_buffer_pointer() for a, d in pairs)
    except Exception:  # noqa: BLE001 - a backend without host pointers copies
        return False


def _path(steps: int, power: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Points alpha in (0, 1) and weights for the path integral of integrated gradients.

    Gauss-Legendre nodes in s, on the reparametrised path alpha = s**power (weights times d alpha/ds).
    From the zero baseline (power 3) points gather near alpha = 0: a model without additive position
    embeddings (Llama) sees inputs near zero there, where RMSNorm is steep; uniform points left 21%
    completeness error at 64 steps on a tiny Llama, this leaves 2e-4 (GPT-2: 6e-7 either way). From a
    token's embedding (power 1) nothing is steep at either end.
    """
    nodes, w = np.polynomial.legendre.leggauss(steps)
    s, w = (nodes + 1) / 2, w / 2
    return s ** power, w * power * s ** (power - 1)


def jax_precision():
    """Full float32 matmuls (XLA's CPU default may round to bf16 passes elsewhere)."""
    import jax
    return jax.default_matmul_precision("highest")


def _pad_to(a: np.ndarray, size: int, fill) -> np.ndarray:
    a = np.asarray(a)
    return np.concatenate([a, np.full(size - len(a), fill, a.dtype)]) if len(a) < size else a


def _pad_rows(x: np.ndarray, length: int) -> np.ndarray:
    """Cut or zero-pad [n, d] to [length, d]. Padding goes after the real tokens, which causal
    attention never lets earlier positions see, so it changes no score."""
    out = np.zeros((length, x.shape[1]), np.float32)
    m = min(length, len(x))
    out[:m] = x[:m]
    return out
