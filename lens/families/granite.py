"""Granite: Llama with four multipliers (embeddings, the attention scale, each residual branch, and
the logits, which are divided by logits_scaling)."""
from .common import LlamaLike

family = LlamaLike(
    "granite", "IBM Granite 3 dense models (embedding, attention, residual and logit multipliers)",
    ("ibm-granite/granite-3.1-2b-base",),
    scale=lambda config, arch: float(config.get("attention_multiplier", arch.d_head ** -0.5)),
    embed_scale=lambda c: float(c.get("embedding_multiplier", 1.0)),
    residual_scale=lambda c: float(c.get("residual_multiplier", 1.0)),
    logit_scale=lambda c: float(c.get("logits_scaling", 1.0)))
