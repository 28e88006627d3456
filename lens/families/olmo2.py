"""OLMo-2: no norm before a branch, an RMSNorm after each (before the residual add), and an RMSNorm
over all heads of q and k."""
from .common import LlamaLike

family = LlamaLike("olmo2", "OLMo-2 (post-norms, q/k norm)", ("allenai/OLMo-2-0425-1B", "allenai/OLMo-2-1124-7B"),
                   norms={"post_attention_layernorm": "ln1_post", "post_feedforward_layernorm": "ln2_post"})
