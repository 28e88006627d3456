"""The model store: folders written by `lens export`, each knowing its manifest, config, weights and
tokenizer. No heavy imports: the runtime, the exporter and the analyses all read folders through here.

The exporter writes `manifest.json` last, inside a temporary folder that is renamed into place, so a
folder with a valid manifest whose files all match was completely written. What opening a folder
verifies: the manifest's structure, every file's size always, and its sha256 once per file version
(a stamp remembers the size and mtime of files already hashed, so a second load does not hash
540 MB again). A file changed in place with its size and mtime restored passes that check; `lens.load(...,
verify="full")` (or `LENS_VERIFY=full`) hashes every file on every load.
"""
from __future__ import annotations

import functools
import hashlib
import json
import mmap
import os
import re
from pathlib import Path

from .files import replace_atomic
from .errors import ModelFolderError
from .swap import repair

FORMAT_VERSION = 1
MANIFEST, GRAPH, WEIGHTS = "manifest.json", "model.onnx", "model.safetensors"
TOKENIZER, CONFIG = "tokenizer.json", "config.json"
GRAPH_DATA = "model.onnx.data"  # the graph's initializers, which the weight map also points into
_STAMP = ".lens-verified.json"
_REEXPORT = "re-export with `lens export --force`"


def default_models_dir() -> Path:
    """`$LENS_MODELS`; else `./models` when it exists (a project's own store); else the per-user
    store (`~/.local/share/lens/models` on Linux), so `lens` works from any folder."""
    if os.environ.get("LENS_MODELS"):
        return Path(os.environ["LENS_MODELS"])
    local = Path.cwd() / "models"
    if local.is_dir():
        return local
    import platformdirs
    return platformdirs.user_data_path("lens") / "models"


def list_models(models_dir: str | os.PathLike | None = None) -> list[dict]:
    """The exported models of a store: name, family, shape, size on disk, folder."""
    store = Path(models_dir) if models_dir else default_models_dir()
    repair(store)
    out = []
    for p in sorted(store.iterdir()) if store.is_dir() else []:
        if not p.is_dir() or p.name.startswith("."):
            continue
        try:
            m = ModelFolder(p).read_manifest(verify=False)
            state = "ok"
        except ModelFolderError as e:
            m, state = {}, str(e)
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        out.append(dict(name=p.name, architecture=m.get("architecture"), n_layers=m.get("n_layers"),
                        d_model=m.get("d_model"), dtype=m.get("dtype", "float32") if m else None,
                        source=m.get("source"), bytes=size, folder=str(p), state=state))
    return out


def model_name(source: str) -> str:
    """Folder name for a source: the hub id's last part, the local folder's name, or a GGUF file's stem."""
    if source.endswith(".gguf"):
        name = Path(source).stem
    else:
        name = Path(source.rstrip("/")).name if os.path.isdir(source) else source.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "model"


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: str) -> str:
    """A model's folder name in the store: one path component of letters, digits, . _ -."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise ModelFolderError(f"model name {name!r} must be letters, digits, '.', '_' or '-', starting with a "
                               f"letter or digit")
    return name


def sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class ModelFolder:
    """One exported model: `folder.manifest`, `folder.config`, `folder.weights()`, file paths."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.graph, self.tokenizer = self.path / GRAPH, self.path / TOKENIZER

    @classmethod
    def resolve(cls, name_or_path: str | os.PathLike, models_dir: str | os.PathLike | None = None) -> ModelFolder:
        """An exported model by name (or hub id) in the store, else by folder path. The store comes
        first for bare names: a source checkpoint folder of the same name here must not shadow its export."""
        text = str(name_or_path)
        store = Path(models_dir) if models_dir else default_models_dir()
        repair(store)
        is_path = isinstance(name_or_path, Path) or os.sep in text or text.startswith(".")
        if not is_path:
            for candidate in (store / text, store / model_name(text)):
                if candidate.is_dir():
                    return cls(candidate)
        if Path(text).is_dir():
            return cls(text)
        raise ModelFolderError(f"model {text!r} is not exported in {store}; run `lens export {text}` first")

    def __repr__(self):
        return f"ModelFolder({str(self.path)!r})"

    @functools.cached_property
    def manifest(self) -> dict:
        return self.read_manifest()

    @functools.cached_property
    def config(self) -> dict:
        return json.loads((self.path / CONFIG).read_text())

    def weights(self) -> dict:
        """{Hugging Face name: numpy array}: views of the graph's initializers as the manifest's weight
        map places them (one copy on disk), plus model.safetensors for the rest; read once per process."""
        try:
            return _load_weights(str(self.path), json.dumps(self.manifest.get("weights") or {}))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for garbage
            raise ModelFolderError(f"{self.path}: cannot read the weights ({str(e).splitlines()[0][:120]}); "
                                   f"{_REEXPORT}") from None

    def release_weight_pages(self) -> None:
        """Drop this process's resident pages of the weight file once an engine has copied what it
        needs (JAX's device buffers): they count in the process's memory while mapped, and are read
        again from the page cache if a view is used later."""
        for mapping in _MAPPINGS.get(str(self.path), {}).values():
            mapping.madvise(mmap.MADV_DONTNEED)

    # ------------------------------------------------------------ manifest
    def write_manifest(self, data: dict) -> None:
        """Describe every file (size, sha256) and write the manifest atomically: the folder's last write."""
        files = {p.relative_to(self.path).as_posix(): {"size": p.stat().st_size, "sha256": sha256(p)}
                 for p in sorted(self.path.rglob("*")) if p.is_file() and p.name not in (MANIFEST, _STAMP)}
        text = json.dumps(dict(data, format=FORMAT_VERSION, files=files), indent=2)
        replace_atomic(self.path / MANIFEST, lambda tmp: tmp.write_text(text))

    def read_manifest(self, verify: bool | str = True) -> dict:
        """Read and check the manifest; raise ModelFolderError naming what is wrong. `verify`: False,
        True (hash files whose size or mtime changed), "full" (hash every file; also LENS_VERIFY=full)."""
        if verify and os.environ.get("LENS_VERIFY") == "full":
            verify = "full"
        path = self.path / MANIFEST
        if not self.path.is_dir():
            raise ModelFolderError(f"model folder {self.path} does not exist; run `lens export MODEL` first")
        if not path.is_file():
            raise ModelFolderError(f"{self.path} has no {MANIFEST}: not an exported lens model, or its export "
                                   f"did not finish; run `lens export --force` again")
        try:
            manifest = json.loads(path.read_text())
            files = manifest["files"]
        except (ValueError, KeyError, TypeError) as e:
            raise ModelFolderError(f"{path} is corrupt ({e.__class__.__name__}); {_REEXPORT}") from None
        if manifest.get("format") != FORMAT_VERSION:
            raise ModelFolderError(f"{self.path} was exported by an incompatible lens (format "
                                   f"{manifest.get('format')}); {_REEXPORT}")
        problem = _manifest_problem(manifest)
        if problem:
            raise ModelFolderError(f"{path} is corrupt ({problem}); {_REEXPORT}")
        if verify:
            self._verify(files, full=verify == "full")
        return manifest

    def _verify(self, files: dict, full: bool = False) -> None:
        stamp_path = self.path / _STAMP
        try:
            stamp = json.loads(stamp_path.read_text())
        except (OSError, ValueError):
            stamp = {}
        fresh = {}
        for rel, want in files.items():
            p = self.path / rel
            if not p.is_file():
                raise ModelFolderError(f"{self.path}: file {rel} is missing; {_REEXPORT}")
            st = p.stat()
            if st.st_size != want["size"]:
                raise ModelFolderError(f"{self.path}: file {rel} has {st.st_size} bytes, the manifest says "
                                       f"{want['size']} (truncated or replaced); {_REEXPORT}")
            key = [st.st_size, st.st_mtime_ns, want["sha256"]]
            if (full or stamp.get(rel) != key) and sha256(p) != want["sha256"]:
                raise ModelFolderError(f"{self.path}: file {rel} does not match its sha256 in the manifest "
                                       f"(corrupt); {_REEXPORT}")
            fresh[rel] = key
        if fresh != stamp:
            try:  # a read-only model folder is fine: we just hash again next time
                stamp_path.write_text(json.dumps(fresh))
            except OSError:
                pass


# what the runtime and the analyses read from a manifest, with the type each must have
_MANIFEST_KEYS = {"architecture": str, "n_layers": int, "d_model": int, "n_heads": int, "n_kv_heads": int,
                  "d_head": int, "d_mlp": int, "n_ctx": int, "d_vocab": int}


def _manifest_problem(m: dict) -> str | None:
    import numpy as np

    if not isinstance(m, dict) or not isinstance(m.get("files"), dict):
        return "no file list"
    for key, kind in _MANIFEST_KEYS.items():
        v = m.get(key)
        if not isinstance(v, kind) or isinstance(v, bool) or (isinstance(v, int) and v < 1):
            return f"{key} is {v!r}"
    if m.get("dtype", "float32") not in ("float32", "float16"):
        return f"dtype is {m.get('dtype')!r}"
    for required in (GRAPH, TOKENIZER, CONFIG):
        if required not in m["files"]:
            return f"it lists no {required}"
    for rel, info in m["files"].items():
        if not (isinstance(rel, str) and isinstance(info, dict) and isinstance(info.get("size"), int)
                and isinstance(info.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", info["sha256"])):
            return f"the entry of {rel!r} has no size and sha256"
        if rel.startswith("/") or ".." in Path(rel).parts:
            return f"{rel!r} points outside the folder"
    weights = m.get("weights")
    if weights is None and WEIGHTS not in m["files"]:
        return f"it lists no {WEIGHTS} and no weight map"
    if weights is not None:
        if not isinstance(weights, dict) or not all(
                isinstance(w, dict) and w.get("file") in m["files"] and isinstance(w.get("offset"), int)
                and w["offset"] >= 0 and isinstance(w.get("shape"), list) and isinstance(w.get("dtype"), str)
                and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in w["shape"])
                and w["dtype"] in ("<f4", "<f2", "<i8", "<i4") and isinstance(w.get("transposed"), bool)
                and w["offset"] + int(np.prod(w["shape"]) if w["shape"] else 1) * int(w["dtype"][-1])
                <= m["files"][w["file"]]["size"] for w in weights.values()):
            return "its weight map does not fit its files"
    return None


_MAPPINGS: dict[str, dict[str, mmap.mmap]] = {}  # folder -> {file: its latest read-only mapping}


@functools.lru_cache(maxsize=2)
def _load_weights(folder: str, weight_map: str) -> dict:
    import numpy as np

    out = {}
    mapping = json.loads(weight_map)
    files = _MAPPINGS[folder] = {}  # fresh mappings: a re-exported folder has new files
    for name, w in mapping.items():
        if w["file"] not in files:
            with open(Path(folder) / w["file"], "rb") as f:
                files[w["file"]] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        dtype = np.dtype(w["dtype"])
        count = int(np.prod(w["shape"])) if w["shape"] else 1
        a = np.frombuffer(files[w["file"]], dtype=dtype, count=count, offset=w["offset"]).reshape(w["shape"])
        out[name] = a.T if w["transposed"] else a
    if (Path(folder) / WEIGHTS).is_file():
        from safetensors.numpy import load_file
        out.update(load_file(str(Path(folder) / WEIGHTS)))
    return out
