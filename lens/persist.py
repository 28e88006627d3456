"""The `.npz` file of an Explanation: one array per array field (dicts of arrays as `field/key`), and
a JSON `meta` entry for the rest, both derived from the dataclass fields. A saved file is untrusted
input (people share them): load() reads each array's header before its data, checks every field's
type, shape and values against the others, and refuses a file that does not add up with one line."""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import MISSING, fields
from pathlib import Path

import numpy as np

from .version import __version__
from .errors import LensError
from .files import write_atomic

FORMAT = 2                                # load() refuses newer files with a clear message
BIG = ("hidden_states", "activations")    # float16 with save(compress=True)
MAX_BYTES = 4 << 30                       # no array of a lens file is near this: refuse before reading it
MAX_META = 256 << 20
MAX_RATIO = 64                            # deflate reaches ~1000x only on runs of one byte: a zip bomb


def kind(f) -> str:
    """How a field is stored: an array, a dict of arrays (one entry each), or JSON metadata."""
    return {"np.ndarray": "array", "dict[str, np.ndarray]": "arrays"}.get(f.type, "json")


def has_default(f) -> bool:
    return f.default is not MISSING or f.default_factory is not MISSING


def save(expl, path, compress: bool = False) -> Path:
    arrays, meta = {}, {"format": FORMAT, "lens_version": __version__, "compressed": compress}
    for f in fields(expl):
        value = getattr(expl, f.name)
        if kind(f) == "array":
            arrays[f.name] = value.astype(np.float16) if compress and f.name in BIG else value
        elif kind(f) == "arrays":
            meta[f.name] = list(value)  # the keys, in order
            arrays.update({f"{f.name}/{k}": v for k, v in value.items()})
        else:
            meta[f.name] = value
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return write_atomic(path, lambda p: _savez(p, arrays), "explanation")


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:  # a file object: numpy would append .npz to a name without it
        np.savez_compressed(f, **arrays)


def load(cls, path):
    path = Path(path)
    if not path.is_file():
        raise LensError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(_read(z, "meta", max_bytes=MAX_META).tobytes().decode("utf-8"))
            if not isinstance(meta, dict):
                raise ValueError("meta is not an object")
            version = meta.get("format")
            if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT:
                raise LensError(f"{path} was written by a newer lens (file format {version}; this lens reads up "
                                f"to {FORMAT}): upgrade lens to read it")
            if version not in (1, 2):
                raise ValueError(f"file format {version!r}")
            names = {n[:-4] for n in z.namelist() if n.endswith(".npy")}
            rename = {}
            if version == 1:  # lens 0.1 named the attribution arrays after the method list
                meta["attributions"] = meta.get("methods")
                rename = {f"attributions/{k}": f"attribution/{k}" for k in meta["methods"] or []}
            values = {}
            for f in fields(cls):
                if f.name not in meta and f.name not in names and has_default(f):
                    continue  # a field added since the file was written
                if kind(f) == "array":
                    values[f.name] = _read(z, f.name)
                elif kind(f) == "arrays":
                    keys = meta[f.name]
                    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                        raise ValueError(f"{f.name} keys")
                    values[f.name] = {k: _read(z, rename.get(f"{f.name}/{k}", f"{f.name}/{k}")) for k in keys}
                else:
                    values[f.name] = meta[f.name]
    except LensError:
        raise
    except KeyError as e:
        raise LensError(f"{path} is not a lens explanation file (no {str(e.args[0])!r})") from None
    except RecursionError:  # JSON nested 100,000 deep
        raise LensError(f"{path} is not a lens explanation file (its metadata is nested too deeply)") from None
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise LensError(f"{path} is not a lens explanation file ({e.__class__.__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    expl = cls(**values)
    problem = check(expl)
    if problem:
        raise LensError(f"{path} is not a valid lens explanation: {problem}")
    return expl


def _read(z: zipfile.ZipFile, name: str, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """One array of the archive, its header checked first: a crafted file's huge shape, or a small
    entry that would inflate far beyond what lens's arrays compress to, is refused before any memory
    is taken, and object arrays (pickles) are never read."""
    info = z.getinfo(name + ".npy")
    if info.file_size > max(16 << 20, MAX_RATIO * info.compress_size):
        raise ValueError(f"{name} would inflate {info.file_size / max(info.compress_size, 1):.0f}-fold "
                         f"to {info.file_size / 2**20:.0f} MiB")
    with z.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        if dtype.hasobject:
            raise ValueError(f"{name} holds Python objects")
        size = math.prod(shape) * dtype.itemsize
        if size > max_bytes:
            raise ValueError(f"{name} claims {size / 2**30:.1f} GiB")
        if size > info.file_size:
            raise ValueError(f"{name} claims more data than the file holds")
        return np.lib.format.read_array(z.open(info), allow_pickle=False)


def check(e) -> str | None:
    """What is wrong with an Explanation's fields (None if nothing): types, shapes that agree with
    each other, finite values in range."""
    if not isinstance(e.model_name, str):
        return "model_name is not text"
    if not (isinstance(e.tokens, list) and all(isinstance(t, str) for t in e.tokens)):
        return "tokens are not a list of text"
    n = len(e.tokens)
    if not isinstance(e.n_prompt, int) or isinstance(e.n_prompt, bool) or not 1 <= e.n_prompt <= n:
        return f"n_prompt {e.n_prompt!r} is not an integer in 1..{n}"
    n_gen = n - e.n_prompt
    arrays = {"token_ids": (e.token_ids, (n,), "i"), "probabilities": (e.probabilities, (n_gen,), "f"),
              "ranks": (e.ranks, (None, n), "i"), "hidden_states": (e.hidden_states, (None, n, None), "f"),
              "activations": (e.activations, (None, n, None), "f"), "top_ids": (e.top_ids, (None, n, None), "i"),
              "top_probs": (e.top_probs, (None, n, None), "f")}
    arrays["factor_saliency"] = (e.factor_saliency, (None, None, None), "f")
    arrays["attention"] = (e.attention, (None, None, None, None), "f")
    for name, (a, shape, k) in arrays.items():
        problem = _check_array(name, a, shape, k)
        if problem:
            return problem
    L = e.activations.shape[0]
    if e.hidden_states.shape[0] != L + 1 or e.ranks.shape[0] != L or e.top_ids.shape[:2] != (L, n) \
            or e.top_probs.shape != e.top_ids.shape:
        return "the layer counts of the arrays disagree"
    if (e.ranks < 1).any() or (e.token_ids < 0).any() or (e.top_ids < 0).any():
        return "negative token ids or ranks below 1"
    if ((e.probabilities < 0) | (e.probabilities > 1)).any() or ((e.top_probs < 0) | (e.top_probs > 1)).any():
        return "probabilities outside 0..1"
    for group, shape, k in (("attributions", (n_gen, n), "f"), ("signed", (n_gen, n), "f"), ("watched", (L, n), "i")):
        d = getattr(e, group)
        if not isinstance(d, dict):
            return f"{group} is not a mapping"
        for key, a in d.items():
            problem = _check_array(f"{group}[{key!r}]", a, shape, k)
            if problem:
                return problem
    k = e.top_ids.shape[2]
    tt = e.top_tokens
    if not (isinstance(tt, list) and len(tt) == L and all(isinstance(r, list) and len(r) == n for r in tt)
            and all(isinstance(c, list) and len(c) == k and all(isinstance(t, str) for t in c) for r in tt for c in r)):
        return f"top_tokens is not a [{L}][{n}][{k}] list of text"
    if not isinstance(e.settings, dict) or not isinstance(e.timings, dict):
        return "settings or timings is not a mapping"
    wt = e.settings.get("watch_tokens", {})  # the report spells watched tokens with these
    if not (isinstance(wt, dict) and all(isinstance(v, list) and all(isinstance(t, str) for t in v) for v in wt.values())):
        return "settings' watch_tokens is not a mapping of text to lists of text"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in e.timings.values()):
        return "timings are not numbers"
    if not isinstance(e.prompt_text, str) or not isinstance(e.generated_text, str):
        return "prompt_text or generated_text is not text"
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
    if not isinstance(e.aopc, dict) or not all(
            isinstance(v, dict) and number(v.get("aopc_morf")) and number(v.get("aopc_lerf")) for v in e.aopc.values()):
        return "aopc is not a mapping of rankings to AOPC numbers"
    if e.ig_completeness_error is not None and not number(e.ig_completeness_error):
        return "ig_completeness_error is not a number"
    if not isinstance(e.devices, dict) or not all(isinstance(v, str) for v in e.devices.values()):
        return "devices is not a mapping to text"
    if not isinstance(e.family, str):
        return "family is not text"
    att = e.attention
    if att.size and (att.shape[0] != L or att.shape[2:] != (n, n) or ((att < 0) | (att > 1)).any()):
        return f"attention has shape {att.shape} or values outside 0..1, not [{L}, heads, {n}, {n}] probabilities"
    fs = e.factor_saliency
    if fs.size and (_check_array("factor_saliency", fs, (None, n, n), "f") or ((fs < 0) | (fs > 1)).any()):
        return _check_array("factor_saliency", fs, (None, n, n), "f") or "factor_saliency outside 0..1"
    if fs.size and not (isinstance(e.settings.get("factor_saliency"), dict)
                        and isinstance(e.settings["factor_saliency"].get("layers"), list)
                        and isinstance(e.settings["factor_saliency"].get("positions"), list)):
        return "factor_saliency without the settings of its factors"
    return None


def _check_array(name, a, shape, kind_code) -> str | None:
    if not isinstance(a, np.ndarray) or a.ndim != len(shape):
        return f"{name} is not a {len(shape)}-D array"
    if any(want is not None and got != want for got, want in zip(a.shape, shape)):
        return f"{name} has shape {a.shape}, not {tuple('*' if s is None else s for s in shape)}"
    if kind_code == "i" and a.dtype.kind not in "iu":
        return f"{name} is not integers"
    if kind_code == "f" and (a.dtype.kind != "f" or not np.isfinite(a).all()):
        return f"{name} is not finite numbers"
    return None
