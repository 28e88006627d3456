"""GPT-2 (gpt2, distilgpt2, gpt2-medium/large/xl, DialoGPT): learned positions, LayerNorm, a fused
q|k|v projection (Conv1D weights are stored [in, out]), any activation_function, and the attention
scale flags (`scale_attn_weights`, `scale_attn_by_inverse_layer_idx`) that only eager attention in
transformers honours."""
from __future__ import annotations

from .common import activation, attention_layers, norm_params, refuse
from .decoder import Arch
from .layers import stack

NAME = "gpt2"
MODEL_TYPES = ("gpt2",)
DESCRIPTION = "GPT-2 (gpt2, distilgpt2, gpt2-medium/large/xl, DialoGPT; any activation, attention scale flags)"
EXAMPLES = ("gpt2", "distilgpt2", "microsoft/DialoGPT-small")


def arch(config: dict) -> Arch:
    refuse(config, add_cross_attention=(None, False))
    d, heads = config["n_embd"], config["n_head"]
    return Arch(family=NAME, n_layers=config["n_layer"], d_model=d, n_heads=heads, n_kv_heads=heads,
                d_head=d // heads, d_mlp=config.get("n_inner") or 4 * d, n_ctx=config["n_positions"],
                d_vocab=config["vocab_size"], norm="layernorm", norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
                act=activation(config, config.get("activation_function", "gelu_new")), rotary=None)


def params(weights: dict, config: dict, arch: Arch, blocks: bool = True) -> dict:
    t = lambda name: weights[f"transformer.{name}"]
    ln = lambda pre: norm_params(weights, f"transformer.{pre}")
    params = {"W_E": t("wte.weight"), "ln_final": ln("ln_f")}
    if blocks:
        params["W_pos"] = t("wpe.weight")
        params["blocks"] = stack([{
            "ln1": ln(f"h.{l}.ln_1"), "ln2": ln(f"h.{l}.ln_2"),
            "attn": {"W_QKV": t(f"h.{l}.attn.c_attn.weight"), "b_QKV": t(f"h.{l}.attn.c_attn.bias"),
                     "W_O": t(f"h.{l}.attn.c_proj.weight"), "b_O": t(f"h.{l}.attn.c_proj.bias")},
            "mlp": {"W_in": t(f"h.{l}.mlp.c_fc.weight"), "b_in": t(f"h.{l}.mlp.c_fc.bias"),
                    "W_out": t(f"h.{l}.mlp.c_proj.weight"), "b_out": t(f"h.{l}.mlp.c_proj.bias")}}
            for l in range(arch.n_layers)])
        params["blocks"].update(attention_layers(arch, scales(config, arch), 0))
    return params


def scales(config: dict, arch: Arch) -> list[float]:
    """Each layer's attention scale: 1/sqrt(d_head) unless scale_attn_weights is off, divided by
    layer + 1 with scale_attn_by_inverse_layer_idx."""
    base = arch.d_head ** -0.5 if config.get("scale_attn_weights", True) else 1.0
    by_layer = config.get("scale_attn_by_inverse_layer_idx", False)
    return [base / (l + 1) if by_layer else base for l in range(arch.n_layers)]


def torch_modules(model):
    """(blocks, final norm, MLP down-projections) of a transformers GPT2LMHeadModel."""
    blocks = model.transformer.h
    return blocks, model.transformer.ln_f, [b.mlp.c_proj for b in blocks]
