"""The model store: folders written by `lens export`, each knowing its manifest, config, weights and
tokenizer. No heavy imports: the runtime, the exporter and the analyses all read folders through here.

The exporter writes `manifest.json` last, inside a temporary folder that is renamed into place, so a
folder with a valid manifest whose files all match was completely written. Opening a folder checks
every file's size always, and its sha256 once per file version: a stamp remembers the (size, mtime)
of files already hashed.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path

from .errors import ModelFolderError

FORMAT_VERSION = 1
MANIFEST, GRAPH, WEIGHTS, TOKENIZER, CONFIG = "manifest.json", "model.onnx", "model.safetensors", "tokenizer.json", "config.json"
_STAMP = ".lens-verified.json"
_REEXPORT = "re-export with `lens export --force`"


def default_models_dir() -> Path:
    """`$LENS_MODELS`, else `models/` in the current folder."""
    return Path(os.environ.get("LENS_MODELS") or Path.cwd() / "models")


def model_name(source: str) -> str:
    """Folder name for a source: the hub id's last part, the local folder's name, or a GGUF file's stem."""
    if source.endswith(".gguf"):
        name = Path(source).stem
    else:
        name = Path(source.rstrip("/")).name if os.path.isdir(source) else source.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "model"


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
    def resolve(cls, name_or_path: str | os.PathLike, models_dir: str | os.PathLike | None = None) -> "ModelFolder":
        """An exported model by name (or hub id) in the store, else by folder path. The store comes
        first for bare names: a source checkpoint folder of the same name here must not shadow its export."""
        text = str(name_or_path)
        store = Path(models_dir) if models_dir else default_models_dir()
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
        return self.read_manifest(verify=True)

    @functools.cached_property
    def config(self) -> dict:
        return json.loads((self.path / CONFIG).read_text())

    def weights(self) -> dict:
        """{Hugging Face name: numpy array} from the safetensors file, read once per process."""
        return _load_weights(str(self.path / WEIGHTS))

    # ------------------------------------------------------------ manifest
    def write_manifest(self, data: dict) -> None:
        """Describe every file (size, sha256) and write the manifest atomically: the folder's last write."""
        files = {p.relative_to(self.path).as_posix(): {"size": p.stat().st_size, "sha256": sha256(p)}
                 for p in sorted(self.path.rglob("*")) if p.is_file() and p.name not in (MANIFEST, _STAMP)}
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(dict(data, format=FORMAT_VERSION, files=files), indent=2))
        os.replace(tmp, self.path / MANIFEST)

    def read_manifest(self, verify: bool = True) -> dict:
        """Read and check the manifest; raise ModelFolderError naming what is wrong."""
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
        for required in (GRAPH, WEIGHTS, TOKENIZER, CONFIG):
            if required not in files:
                raise ModelFolderError(f"{path} lists no {required}; {_REEXPORT}")
        if verify:
            self._verify(files)
        return manifest

    def _verify(self, files: dict) -> None:
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
            if stamp.get(rel) != key and sha256(p) != want["sha256"]:
                raise ModelFolderError(f"{self.path}: file {rel} does not match its sha256 in the manifest "
                                       f"(corrupt); {_REEXPORT}")
            fresh[rel] = key
        if fresh != stamp:
            try:  # a read-only model folder is fine: we just hash again next time
                stamp_path.write_text(json.dumps(fresh))
            except OSError:
                pass


@functools.lru_cache(maxsize=2)
def _load_weights(path: str) -> dict:
    from safetensors.numpy import load_file

    return load_file(path)
