"""One naming scheme for every internal tensor, following TransformerLens hook names.

These names are the extra outputs of an exported graph, the keys of `manifest.json`'s taps and
the keys the runtime returns, so everything downstream speaks the same language.
"""
from __future__ import annotations

EMBED = "blocks.0.hook_resid_pre"          # token + position embeddings, [batch, seq, d_model]
LN_FINAL = "ln_final.hook_normalized"      # after the final LayerNorm, [batch, seq, d_model]
LOGITS_FROM = "logits_from"                # graph input [1]: the first position (of a call's tokens) given logits


def resid_post(layer: int) -> str:
    """Output of block `layer` (residual stream after attention and MLP)."""
    return f"blocks.{layer}.hook_resid_post"


def mlp_post(layer: int) -> str:
    """MLP neuron activations after the non-linearity, [batch, seq, d_mlp]."""
    return f"blocks.{layer}.mlp.hook_post"


def pattern(layer: int) -> str:
    """Attention probabilities of block `layer`, [batch, n_heads, seq, past + seq] (exported on request)."""
    return f"blocks.{layer}.attn.hook_pattern"


def z(layer: int) -> str:
    """Each attention head's output before the output projection, [batch, seq, n_heads * d_head] (heads
    side by side, as the projection reads them): what head interventions edit."""
    return f"blocks.{layer}.attn.hook_z"


def head_taps(n_layers: int) -> list[str]:
    """The per-head taps an export adds where the graph holds the tensor (`lens.interventions`)."""
    return [z(l) for l in range(n_layers)]


def attention_taps(n_layers: int) -> list[str]:
    """The attention taps `lens export --attention-taps` adds."""
    return [pattern(l) for l in range(n_layers)]


def all_taps(n_layers: int) -> list[str]:
    """Every tap an exported graph carries, in a fixed order."""
    names = [EMBED]
    names += [resid_post(l) for l in range(n_layers)]
    names += [mlp_post(l) for l in range(n_layers)]
    names.append(LN_FINAL)
    return names
