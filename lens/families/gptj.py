"""GPT-J: one LayerNorm read by attention and MLP in parallel, rotary on pairs of dimensions
(interleaved) over the first rotary_dim of each head, an unembedding with a bias."""
from __future__ import annotations

from ..errors import LensError
from .common import T, activation, attention_layers, norm_params
from .decoder import Arch
from .layers import stack

NAME = "gptj"
MODEL_TYPES = ("gptj",)
DESCRIPTION = "GPT-J (parallel block, interleaved partial rotary, unembedding bias)"
EXAMPLES = ("EleutherAI/gpt-j-6b",)


def arch(config: dict) -> Arch:
    if not config.get("rotary_dim"):
        raise LensError("GPT-J without rotary_dim is not implemented by lens")
    d, heads = config["n_embd"], config["n_head"]
    return Arch(family=NAME, n_layers=config["n_layer"], d_model=d, n_heads=heads, n_kv_heads=heads,
                d_head=d // heads, d_mlp=config.get("n_inner") or 4 * d, n_ctx=config["n_positions"],
                d_vocab=config["vocab_size"], norm="layernorm", norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
                act=activation(config, config.get("activation_function", "gelu_new")), parallel=True,
                rotary="interleaved")


def params(weights: dict, config: dict, arch: Arch, blocks: bool = True) -> dict:
    t = lambda name: weights[f"transformer.{name}"]
    ln = lambda pre: norm_params(weights, f"transformer.{pre}")
    params = {"W_E": t("wte.weight"), "ln_final": ln("ln_f"), "W_U": weights["lm_head.weight"],
              "b_U": weights["lm_head.bias"]}
    if blocks:
        params["blocks"] = stack([{
            "ln1": ln(f"h.{l}.ln_1"),
            "attn": {f"W_{c}": T(t(f"h.{l}.attn.{p}_proj.weight")) for c, p in zip("QKVO", ("q", "k", "v", "out"))},
            "mlp": {"W_in": T(t(f"h.{l}.mlp.fc_in.weight")), "b_in": t(f"h.{l}.mlp.fc_in.bias"),
                    "W_out": T(t(f"h.{l}.mlp.fc_out.weight")), "b_out": t(f"h.{l}.mlp.fc_out.bias")}}
            for l in range(arch.n_layers)])
        params["blocks"].update(attention_layers(arch, arch.d_head ** -0.5, 0, 10000.0, None, config["rotary_dim"]))
    return params


def torch_modules(model):
    blocks = model.transformer.h
    return blocks, model.transformer.ln_f, [b.mlp.fc_out for b in blocks]
