"""PyTorch `transformers` as the reference the exported graph is checked against: the same taps,
read with forward hooks (block outputs, final norm, the down-projection's input = MLP activation)."""
from __future__ import annotations

import numpy as np

from .. import hooks


def modules(model):
    """(blocks, final norm, MLP down-projections) of a GPT-2 or Llama causal LM."""
    if hasattr(model, "transformer"):  # GPT2LMHeadModel
        blocks = model.transformer.h
        return blocks, model.transformer.ln_f, [b.mlp.c_proj for b in blocks]
    blocks = model.model.layers       # LlamaForCausalLM
    return blocks, model.model.norm, [b.mlp.down_proj for b in blocks]


def torch_taps(model, token_ids, past=None) -> dict[str, np.ndarray]:
    """Run `model` on token_ids [batch, seq]; return logits and every tap as numpy.

    With `past` (a transformers cache from an earlier call) this is one KV-cached step; the returned
    dict then also holds `past` for the next step.
    """
    import torch

    blocks, norm, down = modules(model)
    got = {}
    first = lambda out: out[0] if isinstance(out, tuple) else out
    handles = [m.register_forward_pre_hook(lambda mod, args, l=l: got.__setitem__(hooks.mlp_post(l), args[0]))
               for l, m in enumerate(down)]
    handles += [b.register_forward_hook(lambda mod, args, out, l=l: got.__setitem__(hooks.resid_post(l), first(out)))
                for l, b in enumerate(blocks)]
    handles.append(norm.register_forward_hook(lambda mod, args, out: got.__setitem__(hooks.LN_FINAL, out)))
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(token_ids), past_key_values=past, use_cache=True,
                        output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    res = {"logits": out.logits.numpy(), hooks.EMBED: out.hidden_states[0].numpy()}
    res.update({k: v.detach().numpy() for k, v in got.items()})
    res["past"] = out.past_key_values
    return res
