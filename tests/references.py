"""Independent references the tests compare lens against: PyTorch autograd and PyTorch hidden states
on the same weights, written here without lens's code paths (JAX ports, ORT graph, numpy logit lens)."""
from __future__ import annotations

import json
import re

import numpy as np



def _path(steps: int, power: int = 3):
    """Integrated gradients' quadrature, written here from its definition: Gauss-Legendre nodes s in
    (0, 1) on the path alpha = s**power, weights times d alpha / ds (lens documents the same rule)."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    s = (nodes + 1) / 2
    return s ** power, weights / 2 * power * s ** (power - 1)


def torch_reference(model, ids, n_prompt, method="grad_x_input", target="logit", foil=None, steps=64,
                    baseline=None, power=3):
    """scores [n_gen, n] (normalised), signed [n_gen, n], values [n_gen] via torch autograd, one
    forward and backward per generated token (as Ecco and Captum do). Integrated gradients from
    `baseline` [n, d] (default zero) with the same quadrature rule as lens."""
    import torch

    ids = torch.as_tensor(ids)
    n = len(ids)
    wte = model.get_input_embeddings().weight.detach()
    scores, signed, values = np.zeros((n - n_prompt, n)), np.zeros((n - n_prompt, n)), []
    for t in range(n - n_prompt):
        pos = n_prompt + t
        x = wte[ids[:pos]].clone()
        base = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline[:pos], dtype=x.dtype)

        def f(e):
            logits = logits_from_embeddings(model, ids[:pos], e)[-1]
            s = logits if target == "logit" else torch.softmax(logits, -1)
            return s[ids[pos]] - (s[foil] if foil is not None else 0)

        if method == "integrated_gradients":
            alphas, weights = _path(steps, power)  # the same quadrature rule, so the numbers compare
            g = torch.zeros_like(x)
            for a, w in zip(alphas, weights):
                e = (base + float(a) * (x - base)).requires_grad_(True)
                f(e).backward()
                g += float(w) * e.grad
        else:
            e = x.clone().requires_grad_(True)
            f(e).backward()
            g = e.grad
        with torch.no_grad():
            values.append(float(f(x)))
        s = g.norm(dim=-1) if method == "gradient" else (g * (x - base)).norm(dim=-1)
        scores[t, :pos] = (s / s.sum()).numpy()
        signed[t, :pos] = (g * (x - base)).sum(-1).numpy()
    return scores, signed, np.asarray(values)


def logits_from_embeddings(model, ids, x):
    """The model's logits [n, V] on token ids [n] with their token embeddings replaced by x [n, d]
    (the rows of the embedding matrix, differentiable). The embedding module's output is swapped for
    x times the module's own scale: Gemma 3 scales inside the module, where `inputs_embeds` would
    skip it; Gemma 1 and 2 scale after it."""
    import torch

    emb = model.get_input_embeddings()

    def swap(mod, args, out):
        raw = mod.weight[args[0]].detach()
        k = int(raw.abs().argmax())
        return x[None] * (out.detach().flatten()[k] / raw.flatten()[k])

    handle = emb.register_forward_hook(swap)
    try:
        return model(torch.as_tensor(ids)[None]).logits[0]
    finally:
        handle.remove()


def lxt_relevance(source, ids, n_prompt, tmp_path) -> tuple[np.ndarray, np.ndarray]:
    """(relevance [n_gen, n], logits [n_gen]) from lxt, the AttnLRP authors' PyTorch library, in a
    subprocess (lxt patches torch and transformers process-wide); source: a checkpoint or "smollm2"."""
    import subprocess
    import sys
    from pathlib import Path

    out = Path(tmp_path) / "lxt.npz"
    script = Path(__file__).with_name("lxt_reference.py")
    subprocess.run([sys.executable, str(script), str(source), str(out), str(n_prompt), *map(str, ids)],
                   check=True, timeout=900)
    with np.load(out) as f:
        return f["relevance"], f["logits"]


def assert_equal_to_lxt(ours, want):
    """Per-position relevance within 1e-4 of the row's largest |value|, every generated token."""
    err = np.abs(ours - want).max(1) / np.abs(want).max(1)
    assert err.max() < 1e-4, err


def torch_logit_lens(model, token_ids) -> np.ndarray:
    """[n_layers, n, d_vocab] float64: each block's output through the model's own final norm and
    lm_head, from transformers' hidden states (the last one is already normalised there)."""
    import torch

    base = getattr(model, "transformer", None) or getattr(model, "gpt_neox", None) or model.model
    blocks = getattr(base, "h", None) or base.layers
    norm = next(getattr(base, n) for n in ("ln_f", "final_layer_norm", "norm") if hasattr(base, n))
    outs = []
    handles = [b.register_forward_hook(lambda m, a, o: outs.append(o[0] if isinstance(o, tuple) else o))
               for b in blocks]
    try:
        with torch.no_grad():
            model(torch.as_tensor(np.asarray(token_ids))[None])
            return np.stack([model.get_output_embeddings()(norm(h[0])).numpy() for h in outs]).astype(np.float64)
    finally:
        for h in handles:
            h.remove()


def rank_bounds(z: np.ndarray, target: int, tol: float = 1e-4) -> tuple[int, int]:
    """Rank of `target` in logits z, with logits within tol of it counted either way (float noise
    between two runtimes can swap near-ties)."""
    t = z[target]
    return int((z > t + tol).sum()) + 1, int((z > t - tol).sum()) + 1


def assert_ranks_match(ours: np.ndarray, logits: np.ndarray, targets, tol: float = 1e-4) -> None:
    """ours [n_layers, n] ranks against reference logits [n_layers, n, V] of targets[pos]."""
    for l in range(logits.shape[0]):
        for pos, target in enumerate(targets):
            lo, hi = rank_bounds(logits[l, pos], int(target), tol)
            assert lo <= ours[l, pos] <= hi, (l, pos, ours[l, pos], lo, hi)


def report_models(html: str) -> dict[str, dict]:
    """{name: attributes} of every named Bokeh model in a standalone report, read from the JSON
    document embedded in the file (what the browser will draw)."""
    docs = re.findall(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', html, re.S)
    assert len(docs) == 1, "expected one embedded Bokeh document"
    out = {}

    def walk(node):
        if isinstance(node, dict):
            attrs = node.get("attributes")
            if node.get("type") == "object" and isinstance(attrs, dict) and isinstance(attrs.get("name"), str):
                out[attrs["name"]] = attrs
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(docs[0]))
    return out


def report_sources(html: str) -> dict[str, dict]:
    """{name: data as a dict of lists} of every named ColumnDataSource in a standalone report."""
    return {name: _plain(a["data"]) for name, a in report_models(html).items() if "data" in a}


def _plain(data):
    """Bokeh's serialised {type: map, entries: [[key, value], ...]} as a dict of lists (numpy
    columns, sent as base64 typed arrays, decoded too)."""
    if isinstance(data, dict) and data.get("type") == "map":
        return {k: _column(v) for k, v in data["entries"]}
    return data


def _column(v):
    if isinstance(v, dict) and v.get("type") == "ndarray":
        import base64
        raw = v["array"]["data"] if isinstance(v["array"], dict) else v["array"]
        if isinstance(raw, list):
            return raw
        import gzip
        data = base64.b64decode(raw)
        if data[:2] == b"\x1f\x8b":  # Bokeh gzips large buffers
            data = gzip.decompress(data)
        return np.frombuffer(data, dtype=v["dtype"]).reshape(v["shape"]).tolist()
    return v


# ---------------------------------------------------------------- interventions, by PyTorch forward hooks
class torch_hooks:
    """`with torch_hooks(model, {hook: fn}):` runs the model with `fn(tensor [batch, seq, width]) ->
    tensor` applied at each TransformerLens hook name (blocks.L.hook_resid_pre, hook_resid_post,
    mlp.hook_post, attn.hook_z) through forward hooks on the transformers modules: the reference
    every intervention is checked against. `grab` collects the (edited) hook values by name."""

    def __init__(self, model, edits: dict, grab: dict | None = None):
        from lens import families

        self.model, self.edits, self.grab = model, edits, grab
        self.blocks, _, self.down = families.get(model.config.model_type).torch_modules(model)
        self.handles: list = []

    def _apply(self, name, t):
        fn = self.edits.get(name)
        t = fn(t) if fn is not None else t
        if self.grab is not None:
            self.grab[name] = t.detach().clone()
        return t

    def __enter__(self):
        import re as _re

        names = set(self.edits) | ({f"blocks.{l}.{h}" for l in range(len(self.blocks)) for h in
                                    ("hook_resid_pre", "hook_resid_post", "mlp.hook_post", "attn.hook_z")}
                                   if self.grab is not None else set())
        for name in sorted(names):
            layer, what = _re.match(r"blocks\.(\d+)\.(.+)$", name).groups()
            block = self.blocks[int(layer)]
            if what == "hook_resid_pre":
                def pre(mod, args, kwargs, name=name):
                    if args:
                        return (self._apply(name, args[0]), *args[1:]), kwargs
                    return args, {**kwargs, "hidden_states": self._apply(name, kwargs["hidden_states"])}
                self.handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
            elif what == "hook_resid_post":
                def post(mod, args, out, name=name):
                    if isinstance(out, tuple):
                        return (self._apply(name, out[0]), *out[1:])
                    return self._apply(name, out)
                self.handles.append(block.register_forward_hook(post))
            else:
                from lens.families.common import attention_output
                mod = self.down[int(layer)] if what == "mlp.hook_post" else attention_output(block)
                assert mod is not None, f"no attention output projection in {type(block).__name__}"
                self.handles.append(mod.register_forward_pre_hook(
                    lambda m, args, name=name: (self._apply(name, args[0]), *args[1:])))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def torch_logit_difference(model, ids, answer: int, foil: int, edits: dict | None = None) -> float:
    """logit(answer) - logit(foil) at the last position of ids under `edits` (`torch_hooks`)."""
    import torch

    with torch.no_grad(), torch_hooks(model, edits or {}):
        z = model(torch.as_tensor(ids)[None]).logits[0, -1]
    return float(z[answer] - z[foil])


def torch_patch(clean: dict, layer: int, kind: str, unit: int, d_head: int) -> dict:
    """The `torch_hooks` edit that patches one activation from a clean run's values (`clean`: grabbed by
    `torch_hooks`): position `unit` of resid_pre or mlp_post, or head `unit` of hook_z at every position."""
    hook = {"resid_pre": f"blocks.{layer}.hook_resid_pre", "mlp_post": f"blocks.{layer}.mlp.hook_post",
            "z": f"blocks.{layer}.attn.hook_z"}[kind]
    src = clean[hook]

    def swap(t):
        t = t.clone()
        if kind == "z":
            t[..., unit * d_head:(unit + 1) * d_head] = src[..., unit * d_head:(unit + 1) * d_head]
        else:
            t[:, unit] = src[:, unit]
        return t
    return {hook: swap}


def torch_greedy(model, ids, n_new: int, edits: dict) -> tuple[list[int], np.ndarray]:
    """Greedy continuation of ids under `edits` (`torch_hooks`), the whole sequence run at every step
    (positions stay absolute for position-specific edits); (new ids, the logits of every step [n_new, V])."""
    import torch

    seq, steps = list(ids), []
    with torch.no_grad(), torch_hooks(model, edits):
        for _ in range(n_new):
            z = model(torch.as_tensor(seq)[None]).logits[0, -1].numpy()
            steps.append(z)
            seq.append(int(z.argmax()))
    return seq[len(ids):], np.stack(steps)
