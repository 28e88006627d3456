"""Interventions as data: what to change at which TransformerLens hook, for which positions and units.

Every kind is one affine edit of the hooked activation, `t <- t * scale + add`, at the chosen
positions and units (the rest untouched, bit for bit):
  ablate        scale 0, add a value (0, or a mean over a reference text)
  scale         scale s
  steer         add a vector (a direction in the residual stream, times a coefficient)
  patch         scale 0, add the same activation from another run (activation patching)
  remove_factor add minus an NMF factor's reconstruction W[p, f] H[f] (its component removed)
so both engines implement one operation: the ONNX graph multiplies and adds two inputs at each hooked
tensor (`lens.runtime.intervene`), the JAX port does the same inside its blocks (`decoder._edit`).

Hooks (TransformerLens names): `blocks.{l}.hook_resid_pre`, `blocks.{l}.hook_resid_post` (units:
residual dimensions), `blocks.{l}.mlp.hook_post` (units: neurons), `blocks.{l}.attn.hook_z` (units:
heads; each head's d_head values, before the output projection).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .errors import LensError

HOOK = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|mlp\.hook_post|attn\.hook_z)$")
KIND = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post", "mlp.hook_post": "mlp_post",
        "attn.hook_z": "z"}
KINDS = ("resid_pre", "z", "mlp_post", "resid_post")  # in the order a block computes them


class Dims(NamedTuple):
    """A model's sizes, as far as interventions care."""
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    d_head: int

    @classmethod
    def of(cls, m) -> Dims:
        """From a `lens.Model`, a manifest dict or a `families.decoder.Arch`."""
        get = (lambda k: m[k]) if isinstance(m, dict) else (lambda k: getattr(m, k))
        return cls(int(get("n_layers")), int(get("d_model")), int(get("d_mlp")), int(get("n_heads")),
                   int(get("d_head")))

    def width(self, kind: str) -> int:  # values per position of a hook
        return {"mlp_post": self.d_mlp, "z": self.n_heads * self.d_head}.get(kind, self.d_model)

    def units(self, kind: str) -> int:  # what `units` index: heads for hook_z, else the values
        return self.n_heads if kind == "z" else self.width(kind)


@dataclass(frozen=True, eq=False)
class Intervention:
    """`t <- t * scale + add` at `hook`, on `positions` (None: every position, generated ones too)
    and `units` (None: all). `add` broadcasts to [positions, units] (hook_z: [positions, heads,
    d_head]); `scale` is a number. Build them with the functions below."""
    hook: str
    scale: float = 1.0
    add: float | np.ndarray = 0.0
    positions: tuple[int, ...] | None = None
    units: tuple[int, ...] | None = None
    label: str = ""
    full_width: bool = False  # `add` holds every unit's values [positions, width]; `units` picks among them

    @property
    def layer(self) -> int:
        return int(_parse(self.hook)[0])

    @property
    def kind(self) -> str:
        return _parse(self.hook)[1]

    def describe(self) -> str:
        return self.label or self.hook

    def to_json(self) -> dict:
        """What an Explanation's settings record (a large `add` by its shape only)."""
        add = self.add if np.isscalar(self.add) else f"array{list(np.shape(self.add))}"
        return dict(hook=self.hook, scale=float(self.scale), add=add, label=self.describe(),
                    positions=None if self.positions is None else list(self.positions),
                    units=None if self.units is None else list(self.units))


def _parse(hook) -> tuple[int, str]:
    m = HOOK.match(hook) if isinstance(hook, str) else None
    if not m:
        raise LensError(f"cannot intervene at {hook!r}: give blocks.L.hook_resid_pre, blocks.L.hook_resid_post, "
                        f"blocks.L.mlp.hook_post or blocks.L.attn.hook_z")
    return int(m.group(1)), KIND[m.group(2)]


def _index(values, what: str) -> tuple[int, ...] | None:
    if values is None:
        return None
    vals = [values] if isinstance(values, (int, np.integer)) else list(values)
    if not vals or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
        raise LensError(f"{what} must be integers, not {values!r}")
    return tuple(int(v) for v in vals)


def _floats(x, what: str) -> np.ndarray:
    try:
        return np.asarray(x, np.float32)
    except (TypeError, ValueError):
        raise LensError(f"{what} must be numbers, not {type(x).__name__}") from None


def _make(hook, scale, add, positions, units, label) -> Intervention:
    _parse(hook)
    if not isinstance(scale, (int, float, np.floating, np.integer)) or isinstance(scale, bool) \
            or not np.isfinite(scale):
        raise LensError(f"an intervention's scale must be a finite number, not {scale!r}")
    add = float(_floats(add, "a value to set or add")) if np.isscalar(add) else _floats(add, "a value to set or add")
    if not np.all(np.isfinite(add)):
        raise LensError(f"{label or hook}: the value to set or add is not finite")
    return Intervention(hook, float(scale), add, _index(positions, "positions"), _index(units, "units"), label)


def ablate(hook: str, units=None, positions=None, value=0.0, label: str = "") -> Intervention:
    """Set the activation to `value` (zero ablation; a mean over a reference text: mean ablation)."""
    return _make(hook, 0.0, value, positions, units, label or f"ablate {hook}{_which(units)}")


def scale(hook: str, factor: float, units=None, positions=None, label: str = "") -> Intervention:
    """Multiply the activation by `factor`."""
    return _make(hook, factor, 0.0, positions, units, label or f"scale {hook}{_which(units)} by {factor:g}")


def steer(hook: str, vector, coefficient: float = 1.0, positions=None, label: str = "") -> Intervention:
    """Add `coefficient * vector` (a [width] direction) at every position (or `positions`)."""
    v = _floats(vector, "a steering vector")
    if not isinstance(coefficient, (int, float, np.floating, np.integer)) or isinstance(coefficient, bool):
        raise LensError(f"a steering coefficient must be a number, not {coefficient!r}")
    if v.ndim != 1:
        raise LensError(f"a steering vector is one direction [width], not shape {list(v.shape)}")
    return _make(hook, 1.0, coefficient * v, positions, None, label or f"steer {hook} x {coefficient:g}")


def patch(hook: str, source, positions=None, units=None, label: str = "") -> Intervention:
    """Replace the activation with `source` [n, width], the same hook's values in another run, at
    `positions` (None: all of source's) and `units` (hook_z: heads)."""
    src = _floats(source, "a patch source")
    if src.ndim == 3:                                                         # hook_z as [n, heads, d_head]
        src = src.reshape(len(src), -1)
    if src.ndim != 2:
        raise LensError(f"a patch source is the hook's values in another run [positions, width], not shape "
                        f"{list(src.shape)}")
    pos = tuple(range(len(src))) if positions is None else _index(positions, "positions")
    assert pos is not None
    if max(pos, default=0) >= len(src):
        raise LensError(f"patching position {max(pos)} from a run of {len(src)} positions")
    it = _make(hook, 0.0, src[list(pos)], pos, units, label or f"patch {hook}{_which(units)}")
    return Intervention(it.hook, 0.0, it.add, it.positions, it.units, it.label, full_width=True)


def remove_factor(factors, factor: int, label: str = "") -> list[Intervention]:
    """Remove NMF factor index `factor` (from 0; the report numbers it `factor + 1`) of `factors`
    (`Explanation.factors(...)`) from the MLP neurons it was fitted on: at each position p factorised,
    minus W[p, f] H[f] (its reconstruction) at every layer of the factorisation."""
    if getattr(factors, "method", "nmf") != "nmf":
        raise LensError("only NMF factors can be removed (a PCA component is centred on the mean)")
    if not isinstance(factor, (int, np.integer)) or isinstance(factor, bool) or not 0 <= factor < factors.k:
        raise LensError(f"factor index {factor!r} does not exist: the factorisation has indices 0..{factors.k - 1} "
                        f"(the report's factors 1..{factors.k})")
    pos = [int(p) for p in factors.positions]
    w = factors.token_factors[pos, factor]                                   # [P]
    h = factors.loadings[factor].reshape(len(factors.layers), factors.d_mlp)  # [L_sel, m]
    return [Intervention(f"blocks.{l}.mlp.hook_post", 1.0, -w[:, None] * h[i][None], tuple(pos), None,
                         label or f"remove factor {factor + 1}") for i, l in enumerate(factors.layers)]


@dataclass(frozen=True)
class RemoveFactor:
    """Remove factor `factor` (an index from 0: the report's factor `factor + 1`) of the unedited run's
    NMF (k factors of `layers`, the report's by default): `Explainer.explain` factorises that run
    first, then removes the factor's reconstruction (`remove_factor`). A factor lives on that run's
    positions, so the run keeps its continuation (forced decoding) and the what-if view shows each
    token's probability moving."""
    factor: int
    k: int | None = None
    layers: object = None
    include_first: bool = False

    def describe(self) -> str:
        return f"remove factor {self.factor + 1}"  # numbered from 1, as the report shows factors


def _which(units) -> str:
    return "" if units is None else f"[{units}]" if isinstance(units, (int, np.integer)) else f"{list(units)}"


# ---------------------------------------------------------------- compiled: dense scale and add rows
class Edits:
    """A list of interventions, checked against a model's sizes and compiled to dense rows per hook.

    Hooks are canonical: `blocks.{l}.hook_resid_pre` for l > 0 is `blocks.{l-1}.hook_resid_post` (the
    same tensor; the graph taps the latter), so both engines compose edits in the same order."""

    def __init__(self, interventions, dims: Dims):
        items = [interventions] if isinstance(interventions, Intervention) else list(interventions or [])
        for it in items:
            if not isinstance(it, Intervention):
                raise LensError(f"interventions must be lens.interventions.Intervention objects (ablate, steer, "
                                f"patch, ...), not {type(it).__name__}")
        self.dims = dims
        self.items = [_canonical(it) for it in items]
        for it in self.items:
            _check(it, dims)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def hooks(self) -> list[str]:
        """The canonical hooks edited, each once, in order."""
        return list(dict.fromkeys(it.hook for it in self.items))

    def width(self, hook: str) -> int:
        """Values per position of `hook` (what its scale and add rows hold)."""
        return self.dims.width(_parse(hook)[1])

    def kinds(self) -> list[str]:
        return [k for k in KINDS if any(it.kind == k for it in self.items)]

    def check_length(self, n: int) -> None:
        """Every position named exists in a sequence of n."""
        for it in self.items:
            if it.positions and max(it.positions) >= n:
                raise LensError(f"{it.describe()}: position {max(it.positions)} is past the sequence's {n} tokens")

    def rows(self, hook: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale, add) [stop - start, width] for positions start..stop-1 of the canonical `hook`."""
        kind = _parse(hook)[1]
        w, n = self.dims.width(kind), stop - start
        s, a = np.ones((n, w), np.float32), np.zeros((n, w), np.float32)
        for it in self.items:
            if it.hook != hook:
                continue
            cols = _columns(it, self.dims)
            if it.positions is None:
                rows, src = np.arange(n), None
            else:
                p = np.asarray(it.positions)
                inside = (p >= start) & (p < stop)
                rows, src = p[inside] - start, np.flatnonzero(inside)
            if not len(rows):
                continue
            add = _broadcast_add(it, len(it.positions) if it.positions is not None else 1, cols, self.dims)
            add = add if src is None else add[src]
            # compose: (t * s + a) * scale + add
            sel = np.ix_(rows, cols)
            s[sel] *= it.scale
            a[sel] = a[sel] * it.scale + add
        return s, a

    def stacked(self, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{kind: (scale, add) [n_layers, n, width]} for the JAX port's blocks (positions 0..n-1)."""
        out = {}
        for kind in self.kinds():
            per = [self.rows(f"blocks.{l}.{_suffix(kind)}", 0, n) for l in range(self.dims.n_layers)]
            out[kind] = (np.stack([p[0] for p in per]), np.stack([p[1] for p in per]))
        return out

    def to_json(self) -> list[dict]:
        return [it.to_json() for it in self.items]


def _suffix(kind: str) -> str:
    return {v: k for k, v in KIND.items()}[kind]


def _canonical(it: Intervention) -> Intervention:
    layer, kind = _parse(it.hook)
    if kind == "resid_pre" and layer > 0:
        return Intervention(f"blocks.{layer - 1}.hook_resid_post", it.scale, it.add, it.positions, it.units,
                            it.label or f"{it.hook}", it.full_width)
    return it


def _check(it: Intervention, dims: Dims) -> None:
    layer, kind = _parse(it.hook)
    if layer >= dims.n_layers:
        raise LensError(f"{it.describe()}: layer {layer} does not exist (the model has layers 0..{dims.n_layers - 1})")
    if it.positions is not None and min(it.positions) < 0:
        raise LensError(f"{it.describe()}: positions count from 0, not {min(it.positions)}")
    if it.units is not None:
        top = dims.units(kind)
        bad = [u for u in it.units if not 0 <= u < top]
        if bad:
            what = "head" if kind == "z" else "neuron" if kind == "mlp_post" else "dimension"
            raise LensError(f"{it.describe()}: {what} {bad[0]} does not exist ({it.hook} has {what}s 0..{top - 1})")
    n_pos = len(it.positions) if it.positions is not None else 1
    _broadcast_add(it, n_pos, _columns(it, dims), dims)


def _columns(it: Intervention, dims: Dims) -> np.ndarray:
    kind = _parse(it.hook)[1]
    if it.units is None:
        return np.arange(dims.width(kind))
    if kind == "z":  # a head is its d_head values
        return (np.asarray(it.units)[:, None] * dims.d_head + np.arange(dims.d_head)[None]).ravel()
    return np.asarray(it.units)


def _broadcast_add(it: Intervention, n_pos: int, cols: np.ndarray, dims: Dims) -> np.ndarray:
    """`add` as [n_pos, len(cols)]; a LensError naming the width when it does not fit."""
    a = np.asarray(it.add, np.float32)
    n_cols = len(cols)
    if it.full_width:
        if a.shape[-1] != dims.width(_parse(it.hook)[1]):
            raise LensError(f"{it.describe()}: the source has {a.shape[-1]} values per position; {it.hook} has "
                            f"{dims.width(_parse(it.hook)[1])}")
        a = a[:, cols]
    if a.ndim == 3 and _parse(it.hook)[1] == "z":  # [positions, heads, d_head]
        a = a.reshape(a.shape[0], -1)
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    try:
        return np.broadcast_to(a, (n_pos, n_cols)).astype(np.float32)
    except ValueError:
        shape = list(a.shape)
        raise LensError(f"{it.describe()}: a value of shape {shape} does not fit {it.hook}, which takes "
                        f"{n_cols} values per position{'' if it.units is None else ' (the units chosen)'}") from None


# ---------------------------------------------------------------- the command line's forms
def parse_neuron(spec: str, dims: Dims) -> Intervention:
    """`L.N`: zero-ablate MLP neuron N of layer L."""
    return _parse_unit(spec, dims, "mlp.hook_post", "--ablate", "NEURON, e.g. 3.1027", "neuron")


def parse_head(spec: str, dims: Dims) -> Intervention:
    """`L.H`: zero-ablate attention head H of layer L (its output before the projection)."""
    return _parse_unit(spec, dims, "attn.hook_z", "--ablate-head", "HEAD, e.g. 5.2", "head")


def _parse_unit(spec: str, dims: Dims, suffix: str, flag: str, form: str, what: str) -> Intervention:
    m = re.fullmatch(r"(\d+)\.(\d+)", spec.strip())
    if not m:
        raise LensError(f"{flag} {spec!r}: give LAYER.{form}")
    it = ablate(f"blocks.{m.group(1)}.{suffix}", units=[int(m.group(2))], label=f"ablate {what} {spec.strip()}")
    _check(it, dims)
    return it


def parse_steer(spec: str, dims: Dims) -> Intervention:
    """`L:FILE.npy:SCALE`: add SCALE x the vector in FILE.npy to the residual stream entering layer L
    (ActAdd's place, Turner et al. 2023); L may also be a full hook name."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3:
        raise LensError(f"--steer {spec!r}: give LAYER:FILE.npy:SCALE, e.g. 6:happy.npy:4")
    where, path, coef = parts
    try:
        coefficient = float(coef)
    except ValueError:
        raise LensError(f"--steer {spec!r}: the scale {coef!r} is not a number") from None
    hook = f"blocks.{where}.hook_resid_pre" if where.isdigit() else where
    try:
        vector = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise LensError(f"--steer: cannot read {path!r} as a .npy array ({str(e).splitlines()[0][:120]})") from None
    if not np.issubdtype(vector.dtype, np.number):
        raise LensError(f"--steer: {path!r} holds {vector.dtype}, not numbers")
    it = steer(hook, vector.astype(np.float32).reshape(-1) if vector.ndim == 2 and 1 in vector.shape else vector,
               coefficient, label=f"steer {hook} with {path} x {coefficient:g}")
    _check(_canonical(it), dims)
    return it
