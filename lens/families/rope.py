"""Rotary position embeddings' inverse frequencies for every scaling kind lens implements, computed as
transformers' `modeling_rope_utils` computes them (in float32), in numpy: the JAX ports read them as
per-layer arrays, so a layer with its own base (Gemma 3's local layers) needs nothing special.

Kinds: default, linear, dynamic (equal to default within the model's context, which lens never
exceeds), llama3 and yarn. Others (longrope, which switches factors with the sequence length) are
refused at export with the kind named."""
from __future__ import annotations

import math

import numpy as np

from ..errors import LensError

KINDS = ("default", "linear", "dynamic", "llama3", "yarn")


def kind(scaling: dict | None) -> str:
    if not scaling:
        return "default"
    if not isinstance(scaling, dict):
        raise LensError(f"rope_scaling {scaling!r} is not a JSON object")
    name = scaling.get("rope_type", scaling.get("type", "default"))
    if name not in KINDS:
        raise LensError(f"rope scaling {name!r} is not implemented by lens (it implements {', '.join(KINDS)})")
    return name


def base_inv_freq(base: float, dim: int) -> np.ndarray:  # [dim / 2]
    return (1.0 / np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))).astype(np.float32)


def inv_freq(base: float, dim: int, scaling: dict | None, n_ctx: int) -> tuple[np.ndarray, float]:
    """([dim / 2] inverse frequencies, the factor cos and sin are multiplied by)."""
    name, s = kind(scaling), scaling or {}
    freq = base_inv_freq(base, dim)
    if name in ("default", "dynamic"):
        return freq, 1.0
    factor = float(s["factor"])
    if name == "linear":
        return (freq / np.float32(factor)).astype(np.float32), 1.0
    if name == "llama3":
        return _llama3(freq, factor, s), 1.0
    return _yarn(base, dim, factor, s, n_ctx)


def _llama3(freq, factor, s) -> np.ndarray:
    low, high, old = float(s["low_freq_factor"]), float(s["high_freq_factor"]), s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / freq
    scaled = np.where(wavelen > old / low, freq / factor, freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def _yarn(base, dim, factor, s, n_ctx) -> tuple[np.ndarray, float]:
    original = s.get("original_max_position_embeddings") or n_ctx

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = s.get("attention_factor")
    if attention is None:
        m, m_all = s.get("mscale"), s.get("mscale_all_dim")
        attention = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)
    fast, slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1

    def correction(rotations):
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    lo, hi = correction(fast), correction(slow)
    if s.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - lo) / (hi - lo), 0, 1).astype(np.float32)
    extrapolation = 1 - ramp
    pos = np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    freq = (1 / (factor * pos)) * (1 - extrapolation) + (1 / pos) * extrapolation
    return freq.astype(np.float32), float(attention)
