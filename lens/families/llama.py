"""Llama (Llama 2 and 3 with any rope scaling lens implements, SmolLM2, TinyLlama): RMSNorm, rotary
positions, grouped-query attention, a SwiGLU MLP; optional attention and MLP biases."""
from .common import LlamaLike

family = LlamaLike("llama", "Llama 2/3/3.1/3.2 (rope scaling llama3, linear, dynamic, yarn), SmolLM2, TinyLlama",
                   ("meta-llama/Llama-3.2-1B", "HuggingFaceTB/SmolLM2-135M-Instruct", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"),
                   refused={"pretraining_tp": (None, 1)})
