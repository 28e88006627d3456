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
from ..families.common import attention_output

RTOL = 1e-4  # of each tensor's scale: real checkpoints have activations in the thousands


def torch_taps(model, token_ids, family=None, past=None, attention: bool = False) -> dict[str, np.ndarray]:
    """Run a transformers causal LM on token_ids [batch, seq]; return logits and every tap as numpy
    (with `attention`, every layer's attention probabilities too, as `hooks.pattern(l)`).

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
    for l, b in enumerate(blocks):  # hook_z: the heads side by side, as the output projection reads them
        proj = attention_output(b)
        if proj is not None:
            handles.append(proj.register_forward_pre_hook(lambda mod, args, l=l: got.__setitem__(hooks.z(l), args[0])))
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(token_ids), past_key_values=past, use_cache=True, output_attentions=attention)
    finally:
        for h in handles:
            h.remove()
    res = {"logits": out.logits.numpy()}
    res.update({k: v.detach().numpy() for k, v in got.items()})
    if attention:
        res.update({hooks.pattern(l): a.numpy() for l, a in enumerate(out.attentions)})
    res["past"] = out.past_key_values
    return res


def relative_error(got, want) -> float:
    """The largest absolute difference relative to the reference's scale (at least 1): real checkpoints
    have activations in the thousands."""
    want = np.asarray(want, np.float32)
    return float(np.abs(np.asarray(got, np.float32) - want).max()) / max(1.0, float(np.abs(want).max()))


def position_error(got, want) -> float:
    """The largest absolute difference relative to the reference's scale at that position (its largest
    magnitude there, at least 1). One position (the attention sink: 22,000 in SmolLM2's residual
    stream, where a float16 step is 16) otherwise hides an error at every other."""
    want = np.asarray(want, np.float32)
    diff = np.abs(np.asarray(got, np.float32) - want)
    if want.ndim < 2:
        return relative_error(got, want)
    scale = np.maximum(np.abs(want).max(-1, keepdims=True), 1.0)             # [..., seq, 1]
    return float((diff / scale).max())


class _Worst:
    """The largest errors seen per output, relative to each tensor's scale and to each position's;
    raises on one over its tolerance (`precision.RTOL`, `precision.POSITION_RTOL`)."""

    def __init__(self, dtype: str = "float32"):
        from .precision import POSITION_RTOL, RTOL

        self.rtol, self.position_rtol = RTOL[dtype], POSITION_RTOL[dtype]
        self.worst: dict[str, float] = {}
        self.worst_position: dict[str, float] = {}

    def compare(self, key: str, got, want, what: str):
        err, at = relative_error(got, want), position_error(got, want)
        self.worst[key] = max(self.worst.get(key, 0.0), err)
        self.worst_position[key] = max(self.worst_position.get(key, 0.0), at)
        if not err <= self.rtol:
            raise LensError(f"export validation failed: {what}: {key} differs from PyTorch by {err:.2e} "
                            f"(relative to scale)")
        if not at <= self.position_rtol:
            raise LensError(f"export validation failed: {what}: {key} differs from PyTorch by {at:.2e} "
                            f"at one position (relative to that position's scale)")

    def summary(self) -> dict:
        return {"max_relative_error": max(self.worst.values()), "tolerance": self.rtol,
                "max_position_error": max(self.worst_position.values()), "position_tolerance": self.position_rtol,
                "per_output": self.worst}


def torch_references(torch_model, d_vocab: int, n_ctx: int, lengths=(1, 7, 19), seed=0, attention: bool = False) -> dict:
    """Everything the validation compares with, computed by the PyTorch model (eager attention) while
    it is loaded: full passes of a few lengths (past every sliding window the tiny test models have),
    a 5-token pass then one KV-cached step, and the gradient `validate_port` checks. The exporter then
    frees the model before any engine of the export opens: PyTorch, ONNX Runtime and JAX never hold
    the weights at the same time."""
    family = families.get(torch_model.config.model_type)
    rng = np.random.default_rng(seed)
    without_past = lambda r: {k: v for k, v in r.items() if k != "past"}
    passes = []
    for n in lengths:
        ids = rng.integers(0, d_vocab, size=(1, min(n, n_ctx)))
        passes.append((f"a {n}-token pass", ids, without_past(torch_taps(torch_model, ids, family, attention=attention))))
    ids = rng.integers(0, d_vocab, size=(1, 6))
    first = torch_taps(torch_model, ids[:, :5], family)
    step = without_past(torch_taps(torch_model, ids[:, 5:], family, past=first["past"], attention=attention))
    port_ids = rng.integers(0, d_vocab, size=min(max(lengths), n_ctx))
    targets = np.random.default_rng(len(port_ids)).integers(0, d_vocab, size=len(port_ids))
    resid, grad, logits = torch_gradient(torch_model, family, port_ids, targets)
    return dict(passes=passes, step=(ids, step), port=dict(ids=port_ids, targets=targets, resid=resid, grad=grad,
                                                           logits=logits))


def validate_export(folder, manifest_data: dict, references: dict) -> dict:
    """The graph on full passes and one KV-cached step, then the JAX port, against `torch_references`;
    a graph exported below 32 bits at its precision's tolerances."""
    from ..runtime import Model
    from ..store import ModelFolder
    from .memory import release_freed

    w = _Worst(manifest_data.get("dtype", "float32"))
    model = Model(folder, manifest_data=manifest_data)

    def compare(ours: dict, ref: dict, what: str):
        for key, want in ref.items():
            if key in ours or not key.endswith(".hook_z"):  # a head tap the graph has no tensor for is absent
                w.compare(key, ours[key], want, f"the ONNX graph on {what}")

    patterns = model.attention_taps + model.head_taps
    for what, ids, ref in references["passes"]:
        compare(model.session_run(ids, taps=True, outputs=patterns), ref, what)
    ids, ref = references["step"]
    cache = model.session_run(ids[:, :5], taps=False)["present"]
    compare(model.session_run(ids[:, 5:], past=cache, taps=True, outputs=patterns), ref, "a KV-cached step")
    store = ModelFolder(model.folder)
    store.__dict__["manifest"] = manifest_data
    del model, cache
    release_freed()  # the session's weights go before the JAX port's arrive
    validate_port(store, references["port"], w)
    return w.summary()


def validate_port(store, ref: dict, w: _Worst | None = None) -> dict:
    """The family's JAX forward against PyTorch (`torch_references`' "port"): logits, the residual
    stream entering block 0, and d(sum over positions of the logit of a random token)/d(that
    residual stream)."""
    import jax
    import jax.numpy as jnp

    from ..families import decoder

    w = w or _Worst()
    arch, params = families.load(store.config, store.weights())
    ids, targets, resid = ref["ids"], jnp.asarray(ref["targets"]), jnp.asarray(ref["resid"])
    with jax.default_matmul_precision("highest"):
        x0 = np.asarray(decoder.embed(jnp.asarray(decoder.embedding(params)[ids]), params, arch))
        w.compare("jax/" + hooks.EMBED, x0, ref["resid"], "the JAX port")
        run = lambda x: decoder.logits(decoder.blocks_and_norm(x, params, arch), params, arch)
        w.compare("jax/logits", run(resid), ref["logits"], "the JAX port")
        g = jax.grad(lambda x: decoder.logits(decoder.blocks_and_norm(x, params, arch), params, arch, targets).sum())(resid)
        w.compare("jax/gradient", g, ref["grad"], "the JAX port's gradient")
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
