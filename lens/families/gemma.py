"""Gemma: Llama with norms that scale by 1 + w, embeddings scaled by sqrt(d_model) and a GeGLU MLP."""
from .common import LlamaLike

family = LlamaLike("gemma", "Gemma 1 (1 + w norms, sqrt(d) embedding scale, GeGLU)", ("google/gemma-2b", "google/gemma-7b"),
                   norm_offset=1.0, embed_scale=lambda c: c["hidden_size"] ** 0.5)
