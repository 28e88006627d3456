"""Check an exported folder against the PyTorch model it came from before it is kept: the same taps,
read from PyTorch with forward hooks on the modules the family adapter names (block outputs, final
norm, the down-projection's input = MLP activation)."""
from __future__ import annotations

import numpy as np

from .. import families, hooks
from ..errors import LensError

RTOL = 1e-4  # of each tensor's scale: real checkpoints have activations in the thousands


def torch_taps(model, token_ids, past=None) -> dict[str, np.ndarray]:
    """Run a transformers causal LM on token_ids [batch, seq]; return logits and every tap as numpy.

    With `past` (a transformers cache from an earlier call) this is one KV-cached step; the returned
    dict then also holds `past` for the next step.
    """
    import torch

    blocks, norm, down = families.get(model.config.model_type).torch_modules(model)
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


def validate_export(folder, manifest_data: dict, torch_model, lengths=(1, 7, 19), seed=0) -> dict:
    """Full passes at a few lengths and one KV-cached step; every tap and the logits must match."""
    from ..runtime import Model

    model = Model(folder, manifest_data=manifest_data)
    rng = np.random.default_rng(seed)
    worst = {}

    def compare(ours: dict, ref: dict, what: str):
        for key, want in ref.items():
            if key == "past":
                continue
            got = ours[key]
            scale = max(1.0, float(np.abs(want).max()))
            err = float(np.abs(got - want).max()) / scale
            worst[key] = max(worst.get(key, 0.0), err)
            if not err <= RTOL:
                raise LensError(f"export validation failed: {key} differs from PyTorch by {err:.2e} "
                                f"(relative to scale) on {what}")

    for n in lengths:
        ids = rng.integers(0, model.d_vocab, size=(1, min(n, model.n_ctx)))
        compare(model.session_run(ids, taps=True), torch_taps(torch_model, ids), f"a {n}-token pass")
    ids = rng.integers(0, model.d_vocab, size=(1, 6))
    ref = torch_taps(torch_model, ids[:, :5])
    ours = model.session_run(ids[:, :5], taps=False)
    compare(model.session_run(ids[:, 5:], past=ours["present"], taps=True),
            torch_taps(torch_model, ids[:, 5:], past=ref["past"]), "a KV-cached step")
    return {"max_relative_error": max(worst.values()), "per_output": worst}
