"""PyTorch `transformers` as the reference the exported graph is checked against: the same taps,
read with `output_hidden_states` and forward hooks on each MLP's activation module."""
from __future__ import annotations

import numpy as np

from .. import hooks


def torch_taps(model, token_ids, past=None) -> dict[str, np.ndarray]:
    """Run `model` (a GPT2LMHeadModel) on token_ids [batch, seq]; return logits and every tap as numpy.

    With `past` (a transformers cache from an earlier call) this is one KV-cached step; the returned
    dict then also holds `past` for the next step.
    """
    import torch

    blocks = model.transformer.h
    captured = {}
    handles = [b.mlp.act.register_forward_hook(
        lambda mod, inp, out, l=l: captured.__setitem__(hooks.mlp_post(l), out.detach()))
        for l, b in enumerate(blocks)]
    last = {}
    handles.append(blocks[-1].register_forward_hook(
        lambda mod, inp, out: last.__setitem__("out", out[0] if isinstance(out, tuple) else out)))
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(token_ids), past_key_values=past, use_cache=True,
                        output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    hs = out.hidden_states  # embeddings, blocks 0..n-2 outputs, then ln_f(last block output)
    res = {"logits": out.logits.numpy(), hooks.EMBED: hs[0].numpy(), hooks.LN_FINAL: hs[-1].numpy()}
    n = len(blocks)
    for l in range(n - 1):
        res[hooks.resid_post(l)] = hs[l + 1].numpy()
    res[hooks.resid_post(n - 1)] = last["out"].detach().numpy()
    res.update({k: v.numpy() for k, v in captured.items()})
    res["past"] = out.past_key_values
    return res
