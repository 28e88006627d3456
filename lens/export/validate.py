"""Check every engine of an exported folder against the PyTorch model it came from (eager attention)
before the folder is kept:
  - the ONNX graph: logits and every tap on full passes of a few lengths (past every sliding window
    the tiny test models have) and one KV-cached step;
  - the family's JAX port (what the attributions differentiate): logits, the residual stream entering
    block 0, and the gradient of a sum of logits with respect to it against torch autograd.
A port that does not implement a config option therefore fails here, with the option's effect named,
rather than giving wrong attributions later."""
from __future__ import annotations

import numpy as np

from .. import families, hooks
from ..errors import LensError

RTOL = 1e-4  # of each tensor's scale: real checkpoints have activations in the thousands


def torch_taps(model, token_ids, family=None, past=None) -> dict[str, np.ndarray]:
    """Run a transformers causal LM on token_ids [batch, seq]; return logits and every tap as numpy.

    With `past` (a transformers cache from an earlier call) this is one KV-cached step; the returned
    dict then also holds `past` for the next step.
    """
    import torch

    family = family or families.get(model.config.model_type)
    blocks, norm, down = family.torch_modules(model)
    got: dict = {}
    first = lambda out: out[0] if isinstance(out, tuple) else out
    handles = [m.register_forward_pre_hook(lambda mod, args, l=l: got.__setitem__(hooks.mlp_post(l), args[0]))
               for l, m in enumerate(down)]
    handles += [b.register_forward_hook(lambda mod, args, out, l=l: got.__setitem__(hooks.resid_post(l), first(out)))
                for l, b in enumerate(blocks)]
    handles.append(blocks[0].register_forward_pre_hook(
        lambda mod, args, kwargs: got.__setitem__(hooks.EMBED, args[0] if args else kwargs["hidden_states"]),
        with_kwargs=True))
    handles.append(norm.register_forward_hook(lambda mod, args, out: got.__setitem__(hooks.LN_FINAL, out)))
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(token_ids), past_key_values=past, use_cache=True)
    finally:
        for h in handles:
            h.remove()
    res = {"logits": out.logits.numpy()}
    res.update({k: v.detach().numpy() for k, v in got.items()})
    res["past"] = out.past_key_values
    return res


def relative_error(got, want) -> float:
    """The largest absolute difference relative to the reference's scale at that position (its largest
    magnitude there, at least 1): real checkpoints have activations in the thousands, and one position
    (the attention sink: 22,000 in SmolLM2's residual stream, where a float16 step is 16) would
    otherwise hide an error at every other."""
    want = np.asarray(want, np.float32)
    diff = np.abs(np.asarray(got, np.float32) - want)
    if want.ndim < 2:
        return float(diff.max()) / max(1.0, float(np.abs(want).max()))
    scale = np.maximum(np.abs(want).max(-1, keepdims=True), 1.0)             # [..., seq, 1]
    return float((diff / scale).max())


class _Worst:
    """The largest error seen per output; raises on one over `rtol`."""

    def __init__(self, rtol: float = RTOL):
        self.worst: dict[str, float] = {}
        self.rtol = rtol

    def compare(self, key: str, got, want, what: str):
        err = relative_error(got, want)
        self.worst[key] = max(self.worst.get(key, 0.0), err)
        if not err <= self.rtol:
            raise LensError(f"export validation failed: {what}: {key} differs from PyTorch by {err:.2e} "
                            f"(relative to scale)")


def validate_export(folder, manifest_data: dict, torch_model, lengths=(1, 7, 19), seed=0) -> dict:
    """Full passes at a few lengths and one KV-cached step for the graph, then the JAX port; a graph
    exported below 32 bits at its precision's tolerance (`precision.RTOL`)."""
    from ..runtime import Model
    from .precision import rtol

    model = Model(folder, manifest_data=manifest_data)
    family = families.get(torch_model.config.model_type)
    rng = np.random.default_rng(seed)
    w = _Worst(rtol(manifest_data.get("dtype", "float32")))

    def compare(ours: dict, ref: dict, what: str):
        for key, want in ref.items():
            if key != "past":
                w.compare(key, ours[key], want, f"the ONNX graph on {what}")

    for n in lengths:
        ids = rng.integers(0, model.d_vocab, size=(1, min(n, model.n_ctx)))
        compare(model.session_run(ids, taps=True), torch_taps(torch_model, ids, family), f"a {n}-token pass")
    ids = rng.integers(0, model.d_vocab, size=(1, 6))
    ref = torch_taps(torch_model, ids[:, :5], family)
    ours = model.session_run(ids[:, :5], taps=False)
    compare(model.session_run(ids[:, 5:], past=ours["present"], taps=True),
            torch_taps(torch_model, ids[:, 5:], family, past=ref["past"]), "a KV-cached step")
    validate_port(model.store, torch_model, family, rng.integers(0, model.d_vocab, size=min(max(lengths), model.n_ctx)), w)
    return {"max_relative_error": max(w.worst.values()), "tolerance": w.rtol, "per_output": w.worst}


def validate_port(store, torch_model, family, ids: np.ndarray, w: _Worst | None = None) -> dict:
    """The family's JAX forward against PyTorch on `ids` [n]: logits, the residual stream entering
    block 0, and d(sum over positions of the logit of a random token)/d(that residual stream)."""
    import jax
    import jax.numpy as jnp

    from ..families import decoder

    w = w or _Worst()
    arch, params = families.load(store.config, store.weights())
    targets = np.random.default_rng(len(ids)).integers(0, arch.d_vocab, size=len(ids))
    resid, grad, logits = torch_gradient(torch_model, family, ids, targets)

    with jax.default_matmul_precision("highest"):
        x0 = np.asarray(decoder.embed(jnp.asarray(decoder.embedding(params)[ids]), params, arch))
        w.compare("jax/" + hooks.EMBED, x0, resid, "the JAX port")
        run = lambda x: decoder.logits(decoder.blocks_and_norm(x, params, arch), params, arch)
        w.compare("jax/logits", run(jnp.asarray(resid)), logits, "the JAX port")
        g = jax.grad(lambda x: decoder.logits(decoder.blocks_and_norm(x, params, arch), params, arch,
                                              jnp.asarray(targets)).sum())(jnp.asarray(resid))
        w.compare("jax/gradient", g, grad, "the JAX port's gradient")
    return w.worst


def torch_gradient(model, family, ids, targets):
    """(residual stream entering block 0 [n, d], d(sum_p logit[p, targets[p]])/d(it) [n, d], logits [n, V])
    by torch autograd: the block's input is replaced by a leaf tensor."""
    import torch

    blocks = family.torch_modules(model)[0]
    leaf = {}

    def swap(mod, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        leaf["x"] = x.detach().clone().requires_grad_(True)
        if args:
            return (leaf["x"], *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": leaf["x"]}

    handle = blocks[0].register_forward_pre_hook(swap, with_kwargs=True)
    try:
        logits = model(torch.as_tensor(np.asarray(ids)[None])).logits[0]
        logits[torch.arange(len(ids)), torch.as_tensor(targets)].sum().backward()
    finally:
        handle.remove()
    return leaf["x"].detach().numpy()[0], leaf["x"].grad.numpy()[0], logits.detach().numpy()
