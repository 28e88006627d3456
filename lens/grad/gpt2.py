"""GPT-2's forward pass in JAX, as small pure functions over a params pytree (after picoGPT).

It takes *token embeddings* rather than ids, so gradients with respect to the input exist. Blocks
are stacked along a leading layer axis and run with `lax.scan`: one traced block, so compile time
does not grow with depth (gpt2-xl has 48 blocks).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def gelu(x):  # GPT-2's tanh approximation ("gelu_new")
    return 0.5 * x * (1 + jnp.tanh(jnp.sqrt(2 / jnp.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, g, b, eps):  # [n_seq, d] -> [n_seq, d]
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.var(x, axis=-1, keepdims=True)
    return g * (x - mean) / jnp.sqrt(var + eps) + b


def linear(x, w, b):  # [n_seq, d_in] @ [d_in, d_out] + [d_out] -> [n_seq, d_out]
    return x @ w + b


def attention(q, k, v, mask):  # [n_q, d_k], [n_k, d_k], [n_k, d_v], [n_q, n_k] -> [n_q, d_v]
    return jax.nn.softmax(q @ k.T / jnp.sqrt(q.shape[-1]) + mask, axis=-1) @ v


def mha(x, c_attn, c_proj, n_head):  # [n_seq, d] -> [n_seq, d]
    n = x.shape[0]
    x = linear(x, **c_attn)                                   # [n_seq, 3d]
    q, k, v = jnp.split(x, 3, axis=-1)                        # 3 x [n_seq, d]
    heads = lambda t: t.reshape(n, n_head, -1).transpose(1, 0, 2)  # [n_head, n_seq, d/n_head]
    mask = (1 - jnp.tri(n, dtype=x.dtype)) * jnp.finfo(x.dtype).min  # causal, [n_seq, n_seq]
    out = jax.vmap(attention, in_axes=(0, 0, 0, None))(heads(q), heads(k), heads(v), mask)
    return linear(out.transpose(1, 0, 2).reshape(n, -1), **c_proj)  # [n_head, n_seq, d/n_head] -> [n_seq, d]


def ffn(x, c_fc, c_proj):  # [n_seq, d] -> [n_seq, d]
    return linear(gelu(linear(x, **c_fc)), **c_proj)          # through [n_seq, d_mlp]


def block(x, p, n_head, eps):  # [n_seq, d] -> [n_seq, d]
    x = x + mha(layer_norm(x, **p["ln_1"], eps=eps), **p["attn"], n_head=n_head)
    return x + ffn(layer_norm(x, **p["ln_2"], eps=eps), **p["mlp"])


def final_hidden(tok_emb, params, n_head, eps):  # [n_seq, d] token embeddings -> [n_seq, d] after ln_f
    x = tok_emb + params["wpe"][: tok_emb.shape[0]]           # [n_seq, d]
    x, _ = jax.lax.scan(lambda h, p: (block(h, p, n_head, eps), None), x, params["blocks"])
    return layer_norm(x, **params["ln_f"], eps=eps)


def logits(tok_emb, params, n_head, eps):  # [n_seq, d] -> [n_seq, n_vocab], tied unembedding
    return final_hidden(tok_emb, params, n_head, eps) @ params["wte"].T


def unembedding(params):  # [d_vocab, d_model], tied with the token embedding
    return params["wte"]


def embedding(weights: dict) -> np.ndarray:
    return weights["transformer.wte.weight"]


def load_params(weights: dict[str, np.ndarray], config: dict) -> tuple[dict, dict]:
    """Nested params from a Hugging Face GPT-2 state dict (Conv1D weights are already [in, out]),
    and the static settings `final_hidden` takes."""
    n_layers = config["n_layer"]
    t = lambda name: weights[f"transformer.{name}"]
    lin = lambda pre: {"w": t(f"{pre}.weight"), "b": t(f"{pre}.bias")}
    ln = lambda pre: {"g": t(f"{pre}.weight"), "b": t(f"{pre}.bias")}
    blocks = [{"ln_1": ln(f"h.{l}.ln_1"), "ln_2": ln(f"h.{l}.ln_2"),
               "attn": {"c_attn": lin(f"h.{l}.attn.c_attn"), "c_proj": lin(f"h.{l}.attn.c_proj")},
               "mlp": {"c_fc": lin(f"h.{l}.mlp.c_fc"), "c_proj": lin(f"h.{l}.mlp.c_proj")}}
              for l in range(n_layers)]
    stacked = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *blocks)
    params = {"wte": t("wte.weight"), "wpe": t("wpe.weight"), "blocks": stacked, "ln_f": ln("ln_f")}
    return params, dict(n_head=config["n_head"], eps=float(config.get("layer_norm_epsilon", 1e-5)))
