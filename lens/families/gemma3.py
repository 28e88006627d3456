"""Gemma 3 (text): Gemma 2 with an RMSNorm over each head of q and k, and two RoPE bases: local
(sliding-window) layers rotate with rope_local_base_freq and no scaling, global ones with
rope_theta and rope_scaling."""
from .common import LlamaLike, windows
from .gemma2 import GEMMA2_FLAGS


def local_and_global_rope(config: dict, arch) -> tuple[list, list]:
    local = [w > 0 for w in windows(config, arch.n_layers)]
    return ([config.get("rope_local_base_freq", 10000.0) if l else config.get("rope_theta", 1_000_000.0) for l in local],
            [None if l else config.get("rope_scaling") for l in local])


family = LlamaLike("gemma3", "Gemma 3 text models (q/k norm, local/global RoPE bases, layer_types)",
                   ("google/gemma-3-270m", "google/gemma-3-1b-it"), model_types=("gemma3_text",),
                   rope=local_and_global_rope, **GEMMA2_FLAGS)
