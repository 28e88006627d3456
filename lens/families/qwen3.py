"""Qwen3: Llama with an RMSNorm over each head of q and k, before the rotation."""
from .common import LlamaLike

family = LlamaLike("qwen3", "Qwen3 dense models (q/k norm)", ("Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B"))
