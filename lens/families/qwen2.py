"""Qwen2 and Qwen2.5: Llama with biases on q, k and v (read where the checkpoint stores them); a
sliding window only where `use_sliding_window` turns it on (`layer_types`)."""
from .common import LlamaLike

family = LlamaLike("qwen2", "Qwen2, Qwen2.5 (q/k/v biases)", ("Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B-Instruct"))
