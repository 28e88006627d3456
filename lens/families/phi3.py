"""Phi-3: Llama with fused q|k|v and gate|up projections, partial rotary and a sliding window
(longrope scaling is refused)."""
from .common import LlamaLike

family = LlamaLike("phi3", "Phi-3, Phi-3.5, Phi-4 mini (fused projections; longrope refused)",
                   ("microsoft/Phi-3-mini-4k-instruct", "microsoft/phi-4"))
