"""GPT-NeoX (Pythia): attention and MLP in parallel on one residual (`use_parallel_residual`), a fused
q|k|v laid out per head, rotary on the first rotary_pct of each head, LayerNorm, untied unembedding."""
from __future__ import annotations

from . import rope
from .common import T, activation, attention_layers, norm_params, refuse_moe
from .decoder import Arch
from .layers import stack

NAME = "gpt_neox"
MODEL_TYPES = ("gpt_neox",)
DESCRIPTION = "GPT-NeoX, Pythia (parallel attention and MLP, partial rotary)"
EXAMPLES = ("EleutherAI/pythia-160m", "EleutherAI/pythia-1b", "EleutherAI/gpt-neox-20b")


def arch(config: dict) -> Arch:
    refuse_moe(config)
    rope.kind(config.get("rope_scaling"))
    d, heads = config["hidden_size"], config["num_attention_heads"]
    return Arch(family=NAME, n_layers=config["num_hidden_layers"], d_model=d, n_heads=heads, n_kv_heads=heads,
                d_head=d // heads, d_mlp=config["intermediate_size"], n_ctx=config["max_position_embeddings"],
                d_vocab=config["vocab_size"], norm="layernorm", norm_eps=float(config.get("layer_norm_eps", 1e-5)),
                act=activation(config, config.get("hidden_act", "gelu")),
                parallel=bool(config.get("use_parallel_residual", True)), qkv="per_head")


def params(weights: dict, config: dict, arch: Arch, blocks: bool = True) -> dict:
    t = lambda name: weights[f"gpt_neox.{name}"]
    ln = lambda pre: norm_params(weights, f"gpt_neox.{pre}")

    def lin(pre, w, b):
        out = {w: T(t(f"{pre}.weight"))}
        if f"gpt_neox.{pre}.bias" in weights:
            out[b] = t(f"{pre}.bias")
        return out

    params = {"W_E": t("embed_in.weight"), "ln_final": ln("final_layer_norm"), "W_U": weights["embed_out.weight"]}
    if blocks:
        params["blocks"] = stack([{
            "ln1": ln(f"layers.{l}.input_layernorm"), "ln2": ln(f"layers.{l}.post_attention_layernorm"),
            "attn": {**lin(f"layers.{l}.attention.query_key_value", "W_QKV", "b_QKV"),
                     **lin(f"layers.{l}.attention.dense", "W_O", "b_O")},
            "mlp": {**lin(f"layers.{l}.mlp.dense_h_to_4h", "W_in", "b_in"),
                    **lin(f"layers.{l}.mlp.dense_4h_to_h", "W_out", "b_out")}}
            for l in range(arch.n_layers)])
        rotary = int(arch.d_head * config.get("rotary_pct", config.get("partial_rotary_factor", 0.25)))
        params["blocks"].update(attention_layers(arch, arch.d_head ** -0.5, 0,
                                                 config.get("rope_theta", config.get("rotary_emb_base", 10000)),
                                                 config.get("rope_scaling"), rotary))
    return params


def torch_modules(model):
    blocks = model.gpt_neox.layers
    return blocks, model.gpt_neox.final_layer_norm, [b.mlp.dense_4h_to_h for b in blocks]
