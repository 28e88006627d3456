"""GPT-2 family (gpt2, distilgpt2, gpt2-medium/large/xl, DialoGPT): everything lens knows about it.

The JAX forward takes *token embeddings* rather than ids, so gradients with respect to the input
exist (after picoGPT). Blocks are stacked along a leading layer axis and run with `lax.scan`: one
traced block, so compile time does not grow with depth (gpt2-xl has 48 blocks).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .layers import activation, layer_norm, multi_head, scan_blocks, split_heads, stack

NAME = "gpt2"


def dims(config: dict) -> dict:
    d = config["n_embd"]
    return dict(architecture=NAME, n_layers=config["n_layer"], d_model=d, n_heads=config["n_head"],
                n_kv_heads=config["n_head"], d_head=d // config["n_head"], d_mlp=config.get("n_inner") or 4 * d,
                n_ctx=config["n_positions"], d_vocab=config["vocab_size"], norm="layernorm",
                norm_eps=float(config.get("layer_norm_epsilon", 1e-5)))


# ---------------------------------------------------------------- weights (Hugging Face names)
def load_params(weights: dict[str, np.ndarray], config: dict, blocks: bool = True) -> tuple[dict, dict]:
    """Nested params from a GPT-2 state dict (Conv1D weights are already [in, out]) and the static
    settings the forward takes. `blocks=False` gives only what the logit lens reads (no copies)."""
    t = lambda name: weights[f"transformer.{name}"]
    lin = lambda pre: {"w": t(f"{pre}.weight"), "b": t(f"{pre}.bias")}
    ln = lambda pre: {"g": t(f"{pre}.weight"), "b": t(f"{pre}.bias")}
    params = {"wte": t("wte.weight"), "ln_f": ln("ln_f")}
    if blocks:
        params["wpe"] = t("wpe.weight")
        params["blocks"] = stack([{"ln_1": ln(f"h.{l}.ln_1"), "ln_2": ln(f"h.{l}.ln_2"),
                                   "attn": {"c_attn": lin(f"h.{l}.attn.c_attn"), "c_proj": lin(f"h.{l}.attn.c_proj")},
                                   "mlp": {"c_fc": lin(f"h.{l}.mlp.c_fc"), "c_proj": lin(f"h.{l}.mlp.c_proj")}}
                                  for l in range(config["n_layer"])])
    return params, dict(n_head=config["n_head"], eps=float(config.get("layer_norm_epsilon", 1e-5)))


def embedding(params):  # [d_vocab, d_model] token embeddings
    return params["wte"]


def unembedding(params):  # [d_vocab, d_model], tied with the token embedding
    return params["wte"]


def final_norm(x, params, eps, lrp=False, **_):  # [n_seq, d] -> [n_seq, d]; numpy or JAX
    return layer_norm(x, **params["ln_f"], eps=eps, lrp=lrp)


# ---------------------------------------------------------------- the exporter's PyTorch reference
def torch_modules(model):
    """(blocks, final norm, MLP down-projections) of a transformers GPT2LMHeadModel."""
    blocks = model.transformer.h
    return blocks, model.transformer.ln_f, [b.mlp.c_proj for b in blocks]


# ---------------------------------------------------------------- JAX forward
def gelu(x):  # GPT-2's tanh approximation ("gelu_new")
    return 0.5 * x * (1 + jnp.tanh(jnp.sqrt(2 / jnp.pi) * (x + 0.044715 * x ** 3)))


def linear(x, w, b):  # [n_seq, d_in] @ [d_in, d_out] + [d_out] -> [n_seq, d_out]
    return x @ w + b


def mha(x, c_attn, c_proj, n_head, lrp=False):  # [n_seq, d] -> [n_seq, d]
    q, k, v = jnp.split(linear(x, **c_attn), 3, axis=-1)      # 3 x [n_seq, d]
    heads = [split_heads(t, n_head) for t in (q, k, v)]      # 3 x [n_head, n_seq, d_head]
    return linear(multi_head(*heads, lrp=lrp), **c_proj)


def ffn(x, c_fc, c_proj, lrp=False):  # [n_seq, d] -> [n_seq, d], through [n_seq, d_mlp]
    return linear(activation(gelu, linear(x, **c_fc), lrp), **c_proj)


def block(x, p, n_head, eps, lrp=False):  # [n_seq, d] -> [n_seq, d]
    x = x + mha(layer_norm(x, **p["ln_1"], eps=eps, lrp=lrp), **p["attn"], n_head=n_head, lrp=lrp)
    return x + ffn(layer_norm(x, **p["ln_2"], eps=eps, lrp=lrp), **p["mlp"], lrp=lrp)


def final_hidden(tok_emb, params, n_head, eps, lrp=False):  # [n_seq, d] token embeddings -> [n_seq, d] after ln_f
    x = tok_emb + params["wpe"][: tok_emb.shape[0]]           # [n_seq, d] plus position embeddings
    x = scan_blocks(lambda h, p: block(h, p, n_head, eps, lrp), x, params["blocks"])
    return final_norm(x, params, eps, lrp)
