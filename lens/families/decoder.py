"""One decoder forward for every family, after picoGPT: pure functions over a params pytree, a shape
comment per line. A family is its `Arch` (the architecture's facts as flags) and its weight names;
nothing here names a family.

The params pytree (per-layer entries stacked along a leading layer axis, run with `lax.scan`: one
traced block, so compile time does not grow with depth):
  W_E [V, d]; W_pos [n_ctx, d] (learned positions); ln_final {w, b?}; W_U [V, d] (absent: tied), b_U [V]?
  blocks: ln1, ln1_post, ln2, ln2_post {w, b?} (each optional: which norms a block has and where),
          attn {W_Q [d, H dh], W_K, W_V [d, K dh] or W_QKV [d, (H + 2K) dh]; b_*; W_O [H dh, d], b_O?;
                q_norm, k_norm {w, b?} over a head (Qwen3, Gemma 3) or all heads (OLMo-2)},
          mlp {W_in [d, m], b_in?, W_gate [d, m]? (gated), W_gate_up [d, 2m]? (fused gate | up),
               W_out [m, d], b_out?},
          scale [] (attention scale), window [] (0: none), inv_freq [r / 2], rope_factor [] (RoPE),
          edit {kind: (scale [n, w], add [n, w])}? (interventions: `with_edits`, `lens.interventions`)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .layers import ACTIVATIONS, NORMS, attention, probabilities, rope, soft_cap, split_heads
from .rules import GRADIENT, Rules


@dataclass(frozen=True)
class Arch:
    """Everything about an architecture that is not a weight. Hashable: the compiled functions key on it."""
    family: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    n_ctx: int
    d_vocab: int
    norm: str = "rmsnorm"           # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-6
    norm_offset: float = 0.0        # Gemma stores w and scales by 1 + w
    act: str = "silu"               # transformers' ACT2FN name
    parallel: bool = False          # attention and MLP both read the block's input (GPT-NeoX, GPT-J)
    rotary: str | None = "half"     # None (learned positions), "half" (Llama, NeoX), "interleaved" (GPT-J)
    qkv: str = "concat"             # a fused W_QKV's columns: "concat" (q | k | v) or "per_head" (NeoX)
    embed_scale: float = 1.0        # Gemma: sqrt(d_model); Granite: embedding_multiplier
    residual_scale: float = 1.0     # Granite: each branch's output is scaled before it is added
    attn_softcap: float | None = None   # Gemma 2: scores -> cap tanh(scores / cap)
    final_softcap: float | None = None  # Gemma 2: logits -> cap tanh(logits / cap)
    logit_scale: float = 1.0        # Granite: logits divided by logits_scaling

    def __post_init__(self):
        assert self.norm in NORMS and self.act in ACTIVATIONS and self.rotary in (None, "half", "interleaved")

    def dims(self) -> dict:
        """What the manifest records (the runtime reads n_kv_heads and d_head for its KV cache)."""
        d = asdict(self)
        return dict(architecture=d.pop("family"), **{k: d[k] for k in (
            "n_layers", "d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "norm", "norm_eps")})


# ---------------------------------------------------------------- the pieces
def norm(x, p, arch: Arch, rules: Rules = GRADIENT):  # [..., d] -> [..., d]
    return NORMS[arch.norm](x, p["w"], p.get("b"), arch.norm_eps, arch.norm_offset, rules)


def _linear(x, a, w, b):  # x @ a[w] (+ a[b])
    y = x @ a[w]
    return y + a[b] if b in a else y


def _head_norm(t, p, arch, rules):  # [n, H dh] normed over each head (p: [dh]) or over all heads (p: [H dh])
    n = t.shape[0]
    return norm(t.reshape(n, -1, p["w"].shape[-1]), p, arch, rules).reshape(n, -1)


def qkv(x, a, arch: Arch, rules: Rules = GRADIENT):  # [n, d] -> q [H, n, dh], k and v [K, n, dh]
    n, H, K, dh = x.shape[0], arch.n_heads, arch.n_kv_heads, arch.d_head
    if "W_QKV" in a:
        t = _linear(x, a, "W_QKV", "b_QKV")                                # [n, (H + 2K) dh]
        if arch.qkv == "per_head":                                         # [n, H, 3, dh] (GPT-NeoX)
            t = t.reshape(n, H, 3, dh)
            q, k, v = (t[:, :, i].reshape(n, H * dh) for i in range(3))
        else:
            q, k, v = t[:, :H * dh], t[:, H * dh:(H + K) * dh], t[:, (H + K) * dh:]
    else:
        q, k, v = (_linear(x, a, f"W_{c}", f"b_{c}") for c in "QKV")
    if "q_norm" in a:
        q, k = _head_norm(q, a["q_norm"], arch, rules), _head_norm(k, a["k_norm"], arch, rules)
    return split_heads(q, H), split_heads(k, K), split_heads(v, K)


class Memory(NamedTuple):
    """How a forward under a gradient trades compute for memory; no value changes (the engine picks)."""
    remat_layers: bool = False  # keep only each layer's input for the backward pass, recompute the rest
    query_block: int = 0        # attention a block of queries at a time, each recomputed (0: all at once)


KEEP_ALL = Memory()


def heads(x, p, arch: Arch, rules: Rules = GRADIENT):  # [n, d] normed -> q, k, v [H, n, dh], rotated
    q, k, v = qkv(x, p["attn"], arch, rules)
    if arch.rotary:
        q = rope(q, p["inv_freq"], arch.rotary, p["rope_factor"])           # [H, n, dh]
        k = rope(k, p["inv_freq"], arch.rotary, p["rope_factor"])           # [K, n, dh]
    group = arch.n_heads // arch.n_kv_heads                                 # query heads per key/value head
    return q, jnp.repeat(k, group, axis=0), jnp.repeat(v, group, axis=0)   # [H, n, dh] each


def attend(x, p, arch: Arch, rules: Rules = GRADIENT, mem: Memory = KEEP_ALL):  # [n, d] -> [n, d]
    return _linear(attend_z(x, p, arch, rules, mem), p["attn"], "W_O", "b_O")


def attend_z(x, p, arch: Arch, rules: Rules = GRADIENT, mem: Memory = KEEP_ALL):  # [n, d] -> [n, H dh] (hook_z)
    q, k, v = heads(x, p, arch, rules)
    z = attention(q, k, v, p["scale"], p["window"], arch.attn_softcap, rules, mem.query_block)  # [n, H dh]
    return _edit(z, p, "z")


def _edit(t, p, kind: str):  # [n, w] -> [n, w]: an intervention's t * scale + add, where the block has one
    e = p.get("edit")
    if not e or kind not in e:
        return t
    s, a = e[kind]                                                          # [n, w] each
    return t * s + a


def with_edits(params, edits: dict):
    """params whose blocks carry `edits` ({kind: (scale, add) [L, n, w]}: `Edits.stacked(n)`); the
    blocks then apply them (n must be the sequence length run)."""
    if not edits:
        return params
    return {**params, "blocks": {**params["blocks"], "edit": edits}}


def attention_pattern(x, p, arch: Arch):  # [n, d] a block's input -> [H, n, n] its attention probabilities
    q, k, _ = heads(norm(x, p["ln1"], arch) if "ln1" in p else x, p, arch)
    return probabilities(q, k, p["scale"], p["window"], arch.attn_softcap)


def mlp(x, m, arch: Arch, rules: Rules = GRADIENT):  # [n, d] -> [n, d], through [n, d_mlp]
    return _linear(mlp_post(x, m, arch, rules), m, "W_out", "b_out")


def mlp_post(x, m, arch: Arch, rules: Rules = GRADIENT):  # [n, d] -> [n, d_mlp]: the neurons (hook_post)
    act = ACTIVATIONS[arch.act]
    if "W_gate_up" in m:                                                    # Phi-3: gate | up, fused
        gate, up = jnp.split(_linear(x, m, "W_gate_up", "b_gate_up"), 2, axis=-1)
    elif "W_gate" in m:
        gate, up = _linear(x, m, "W_gate", "b_gate"), _linear(x, m, "W_in", "b_in")
    else:
        return rules.activation(act, _linear(x, m, "W_in", "b_in"))
    return rules.product(rules.activation(act, gate), up)


def block(x, p, arch: Arch, rules: Rules = GRADIENT, mem: Memory = KEEP_ALL):  # [n, d] -> [n, d]
    return block_and_neurons(x, p, arch, rules, mem)[0]


def block_and_neurons(x, p, arch: Arch, rules: Rules = GRADIENT, mem: Memory = KEEP_ALL):
    """[n, d] -> ([n, d] the block's output, [n, d_mlp] its MLP neurons: hook_post)."""
    out, hooked = block_hooks(x, p, arch, rules, mem)
    return out, hooked["mlp_post"]


def block_hooks(x, p, arch: Arch, rules: Rules = GRADIENT, mem: Memory = KEEP_ALL):
    """[n, d] -> ([n, d] the block's output, {kind: [n, w]} its hooks' values after any edit:
    resid_pre [n, d], z [n, H dh], mlp_post [n, d_mlp], resid_post [n, d])."""
    s, m = arch.residual_scale, p["mlp"]
    x = _edit(x, p, "resid_pre")
    if arch.parallel:                                                       # one residual read by both branches
        h = norm(x, p["ln1"], arch, rules)
        z = attend_z(h, p, arch, rules, mem)
        post = _edit(mlp_post(norm(x, p["ln2"], arch, rules) if "ln2" in p else h, m, arch, rules), p, "mlp_post")
        out = x + s * _linear(z, p["attn"], "W_O", "b_O") + s * _linear(post, m, "W_out", "b_out")
    else:
        z = attend_z(norm(x, p["ln1"], arch, rules) if "ln1" in p else x, p, arch, rules, mem)
        a = _linear(z, p["attn"], "W_O", "b_O")
        mid = x + s * (norm(a, p["ln1_post"], arch, rules) if "ln1_post" in p else a)
        post = _edit(mlp_post(norm(mid, p["ln2"], arch, rules) if "ln2" in p else mid, m, arch, rules), p, "mlp_post")
        o = _linear(post, m, "W_out", "b_out")
        out = mid + s * (norm(o, p["ln2_post"], arch, rules) if "ln2_post" in p else o)
    out = _edit(out, p, "resid_post")
    return out, {"resid_pre": x, "z": z, "mlp_post": post, "resid_post": out}


def neurons(tok_emb, params, arch: Arch, mem: Memory = KEEP_ALL):  # [n, d] token embeddings -> [L, n, d_mlp]
    """Every layer's MLP neurons (what the graph's `blocks.{l}.mlp.hook_post` taps hold)."""
    def layer(h, p):
        return block_and_neurons(h, p, arch, GRADIENT, mem)
    step = jax.checkpoint(layer) if mem.remat_layers else layer
    return jax.lax.scan(step, embed(tok_emb, params, arch), params["blocks"])[1]


# ---------------------------------------------------------------- the model
def embed(tok_emb, params, arch: Arch):  # [n, d] token embeddings -> [n, d] the residual stream entering block 0
    x = tok_emb * jnp.asarray(arch.embed_scale, tok_emb.dtype) if arch.embed_scale != 1.0 else tok_emb
    return x + params["W_pos"][: tok_emb.shape[0]] if "W_pos" in params else x


def final_hidden(tok_emb, params, arch: Arch, rules: Rules = GRADIENT, mem: Memory = KEEP_ALL):  # [n, d] -> [n, d]
    return blocks_and_norm(embed(tok_emb, params, arch), params, arch, rules, mem)


def blocks_and_norm(x, params, arch: Arch, rules: Rules = GRADIENT, mem: Memory = KEEP_ALL):  # [n, d] -> [n, d]
    def layer(h, p):
        return block(h, p, arch, rules, mem), None
    x, _ = jax.lax.scan(jax.checkpoint(layer) if mem.remat_layers else layer, x, params["blocks"])
    return final_norm(x, params, arch, rules)


def run_with_cache(tok_emb, params, arch: Arch):
    """[n, d] token embeddings -> (the normed final hidden states [n, d], {kind: [L, n, w]} every
    layer's hook values: TransformerLens's `run_with_cache` for resid_pre, z, mlp_post, resid_post)."""
    h, cache = jax.lax.scan(lambda h, p: block_hooks(h, p, arch), embed(tok_emb, params, arch), params["blocks"])
    return final_norm(h, params, arch), cache


def run_from(x, params, arch: Arch, start, edit: dict | None = None):
    """[n, d] the residual stream entering layer `start` (a traced integer: one compilation serves
    every layer) -> [n, d] the normed final hidden states, layers start.. run; `edit` ({kind:
    (scale, add) [n, w]}) applies at layer `start` only (activation patching starts from a cached run)."""
    blocks = {k: v for k, v in params["blocks"].items() if k != "edit"}

    def body(i, h):
        p = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), blocks)
        if edit:
            first = i == start
            p = {**p, "edit": {k: (jnp.where(first, s, 1.0), jnp.where(first, a, 0.0)) for k, (s, a) in edit.items()}}
        return block(h, p, arch)
    return final_norm(jax.lax.fori_loop(start, arch.n_layers, body, x), params, arch)


def attention_patterns(tok_emb, params, arch: Arch, mean_heads: bool = False):
    """[n, d] token embeddings -> (the normed final hidden states [n, d], every layer's attention
    probabilities [L, H, n, n]: what `hook_pattern` holds in TransformerLens); with `mean_heads`,
    each layer's mean over heads [L, n, n] (attention rollout and flow need no more)."""
    def layer(h, p):
        pattern = attention_pattern(h, p, arch)                              # [H, n, n]
        return block(h, p, arch), pattern.mean(0) if mean_heads else pattern
    h, patterns = jax.lax.scan(layer, embed(tok_emb, params, arch), params["blocks"])
    return final_norm(h, params, arch), patterns


def final_norm(x, params, arch: Arch, rules: Rules = GRADIENT):  # [n, d] -> [n, d]; numpy or JAX
    return norm(x, params["ln_final"], arch, rules)


def embedding(params):  # [V, d] the token embeddings (the attributions' input)
    return params["W_E"]


def unembedding(params):  # [V, d] the output embeddings (tied unless stored apart)
    return params["W_U"] if "W_U" in params else params["W_E"]


def logits(h, params, arch: Arch, tokens=None, rules: Rules = GRADIENT):
    """[n, d] normed hidden states -> [n, V] logits, or [n] the logit of tokens[i] at row i."""
    u = unembedding(params)
    if tokens is None:
        z = h @ u.T                                                         # [n, V]
        z = z + params["b_U"] if "b_U" in params else z
    else:
        z = (h * u[tokens]).sum(-1)                                         # [n]
        z = z + params["b_U"][tokens] if "b_U" in params else z
    z = z / arch.logit_scale if arch.logit_scale != 1.0 else z
    return soft_cap(z, arch.final_softcap, rules)
