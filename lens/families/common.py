"""Helpers the family adapters share: reading a config.json dict with refusals, the per-layer attention
arrays (scale, window, RoPE frequencies), and Hugging Face state-dict names -> lens's params pytree
for the many families laid out like Llama (`model.layers.{l}.self_attn.q_proj`, ...)."""
from __future__ import annotations

import numpy as np

from ..errors import LensError
from . import rope
from .decoder import Arch
from .layers import stack

MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_intermediate_size")


def refuse(config: dict, **unsupported) -> None:
    """Refuse a config whose option `key` is set to anything but the given harmless values: one line
    naming the option. `unsupported`: {key: (harmless values,)}."""
    for key, harmless in unsupported.items():
        v = config.get(key)
        if v not in harmless:
            raise LensError(f"config option {key}={v!r} is not implemented by lens for "
                            f"{config.get('model_type')} models")


def refuse_moe(config: dict) -> None:
    for key in MOE_KEYS:
        if config.get(key):
            raise LensError(f"{config.get('model_type')}: mixture-of-experts models ({key}={config[key]}) are "
                            f"not supported by lens")


def head_dim(config: dict) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def llama_arch(config: dict, family: str, **flags) -> Arch:
    """An Arch from the config keys Llama-like families share; `flags` override or add."""
    refuse_moe(config)
    rope.kind(config.get("rope_scaling"))
    heads = config["num_attention_heads"]
    fields = dict(family=family, n_layers=config["num_hidden_layers"], d_model=config["hidden_size"], n_heads=heads,
                  n_kv_heads=config.get("num_key_value_heads") or heads, d_head=head_dim(config),
                  d_mlp=config["intermediate_size"], n_ctx=config["max_position_embeddings"],
                  d_vocab=config["vocab_size"], norm_eps=float(config.get("rms_norm_eps", 1e-6)))
    if "act" not in flags:
        flags["act"] = activation(config, config.get("hidden_act", "silu"))
    return Arch(**fields, **flags)


def activation(config: dict, name) -> str:
    from .layers import ACTIVATIONS

    if name not in ACTIVATIONS:
        raise LensError(f"activation function {name!r} ({config.get('model_type')}) is not implemented by lens; "
                        f"it implements {', '.join(sorted(ACTIVATIONS))}")
    return name


def windows(config: dict, n_layers: int) -> list[int]:
    """Each layer's sliding window (0: none): `layer_types` where the config has them, else the one
    `sliding_window` for every layer."""
    w = config.get("sliding_window") or 0
    types = config.get("layer_types")
    if config.get("use_sliding_window") is False:  # Qwen2/3: a window in the config, switched off
        return [0] * n_layers
    if types:
        if len(types) != n_layers or set(types) - {"sliding_attention", "full_attention"}:
            raise LensError(f"layer_types {types!r} is not implemented by lens")
        return [w if t == "sliding_attention" else 0 for t in types]
    return [w] * n_layers


def attention_layers(arch: Arch, scale, window, bases=None, scaling=None, rotary_dim=None) -> dict:
    """The per-layer arrays of the blocks pytree: scale [L], window [L], and for RoPE inv_freq
    [L, r / 2] and rope_factor [L]. `scale`, `window`, `bases` and `scaling`: one value or one per layer."""
    L = arch.n_layers
    per = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * L
    out = {"scale": np.asarray(per(scale), np.float32), "window": np.asarray(per(window), np.int32)}
    if arch.rotary:
        freqs = [rope.inv_freq(b, rotary_dim or arch.d_head, s, arch.n_ctx) for b, s in zip(per(bases), per(scaling))]
        out["inv_freq"] = np.stack([f for f, _ in freqs])
        out["rope_factor"] = np.asarray([a for _, a in freqs], np.float32)
    return out


def T(w: np.ndarray) -> np.ndarray:
    """A Linear's [out, in] weight as [in, out]; a view where the exporter stored it transposed."""
    return np.ascontiguousarray(w.T)


def llama_params(weights: dict, arch: Arch, norms: dict[str, str], per_layer: dict, blocks: bool = True,
                 prefix: str = "model") -> dict:
    """params from a Llama-layout state dict. `norms`: {Hugging Face norm name in a layer: lens role
    (ln1, ln1_post, ln2, ln2_post)}; biases, q/k norms and fused projections are read where stored."""
    t = lambda name: weights[f"{prefix}.{name}"]
    params = {"W_E": t("embed_tokens.weight"), "ln_final": norm_params(weights, f"{prefix}.norm")}
    if "lm_head.weight" in weights:
        params["W_U"] = weights["lm_head.weight"]
    if blocks:
        params["blocks"] = stack([_llama_layer(weights, f"{prefix}.layers.{l}", norms) for l in range(arch.n_layers)])
        params["blocks"].update(per_layer)
    return params


PROJECTIONS = {"self_attn": {"q_proj": "Q", "k_proj": "K", "v_proj": "V", "o_proj": "O", "qkv_proj": "QKV"},
               "mlp": {"gate_proj": "gate", "up_proj": "in", "down_proj": "out", "gate_up_proj": "gate_up"}}


def _llama_layer(weights: dict, pre: str, norms: dict) -> dict:
    layer = {role: norm_params(weights, f"{pre}.{name}") for name, role in norms.items()}
    for part, names in PROJECTIONS.items():
        key = "attn" if part == "self_attn" else "mlp"
        layer[key] = {}
        for hf, c in names.items():
            if f"{pre}.{part}.{hf}.weight" in weights:
                layer[key][f"W_{c}"] = T(weights[f"{pre}.{part}.{hf}.weight"])
                if f"{pre}.{part}.{hf}.bias" in weights:
                    layer[key][f"b_{c}"] = weights[f"{pre}.{part}.{hf}.bias"]
    for c in ("q", "k"):
        if f"{pre}.self_attn.{c}_norm.weight" in weights:
            layer["attn"][f"{c}_norm"] = norm_params(weights, f"{pre}.self_attn.{c}_norm")
    return layer


def norm_params(weights: dict, name: str) -> dict:
    """{w, b?} of the norm `name` (its weight, and its bias where the checkpoint stores one)."""
    p = {"w": weights[f"{name}.weight"]}
    if f"{name}.bias" in weights:
        p["b"] = weights[f"{name}.bias"]
    return p


OUT_PROJECTIONS = ("self_attn.o_proj", "attn.c_proj", "attention.dense", "attn.out_proj")


def attention_output(block):
    """A transformers block's attention output projection: its input is TransformerLens's hook_z (the
    heads side by side), for every family lens implements; None if it has none of these names."""
    for path in OUT_PROJECTIONS:
        mod = block
        for part in path.split("."):
            mod = getattr(mod, part, None)
        if mod is not None:
            return mod
    return None


def llama_torch_modules(model):
    """(blocks, final norm, MLP down-projections) of a Llama-layout transformers model."""
    blocks = model.model.layers
    return blocks, model.model.norm, [b.mlp.down_proj for b in blocks]


LLAMA_NORMS = {"input_layernorm": "ln1", "post_attention_layernorm": "ln2"}
SANDWICH_NORMS = {"input_layernorm": "ln1", "post_attention_layernorm": "ln1_post",   # Gemma 2 and 3
                  "pre_feedforward_layernorm": "ln2", "post_feedforward_layernorm": "ln2_post"}


def default_scale(config: dict, arch: Arch) -> float:
    return arch.d_head ** -0.5


def one_rope(config: dict, arch: Arch) -> tuple:
    """(RoPE base, scaling): the config's, for every layer."""
    return config.get("rope_theta", 10000.0), config.get("rope_scaling")


class LlamaLike:
    """A family laid out like Llama (`model.layers.{l}.self_attn.q_proj`, ...), described by its
    differences: which norms a block has (`norms`), the attention scale, the RoPE bases, and Arch
    flags (`flags`: values, or functions of the config). Biases, q/k norms and fused projections
    are read wherever the checkpoint stores them; sliding windows wherever the config asks."""

    torch_modules = staticmethod(llama_torch_modules)

    def __init__(self, name: str, description: str, examples: tuple, model_types: tuple | None = None,
                 norms: dict = LLAMA_NORMS, scale=default_scale, rope=one_rope, refused: dict | None = None, **flags):
        self.NAME, self.DESCRIPTION, self.EXAMPLES = name, description, examples
        self.MODEL_TYPES = model_types or (name,)
        self.norms, self.scale, self.rope, self.refused, self.flags = norms, scale, rope, refused or {}, flags

    def arch(self, config: dict) -> Arch:
        refuse(config, **self.refused)
        return llama_arch(config, self.NAME, **{k: f(config) if callable(f) else f for k, f in self.flags.items()})

    def params(self, weights: dict, config: dict, arch: Arch, blocks: bool = True) -> dict:
        bases, scaling = self.rope(config, arch)
        layers = attention_layers(arch, self.scale(config, arch), windows(config, arch.n_layers), bases, scaling,
                                  int(arch.d_head * (config.get("partial_rotary_factor") or 1.0)))
        return llama_params(weights, arch, self.norms, layers, blocks)

    def __repr__(self):
        return f"<lens family {self.NAME}>"
