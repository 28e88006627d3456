"""`manifest.json` of an exported model folder: what is in it, and a check that it is all there.

The exporter writes it last, inside a temporary folder that is renamed into place, so a folder
with a valid manifest whose files all match was completely written. Loading verifies sizes always
and sha256 once per file version: a stamp remembers (size, mtime) of files already hashed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .errors import ModelFolderError

MANIFEST = "manifest.json"
GRAPH = "model.onnx"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
CONFIG = "config.json"
_STAMP = ".lens-verified.json"
FORMAT_VERSION = 1


def sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_files(folder: Path) -> dict:
    """{relative path: {size, sha256}} for every file in `folder` except the manifest itself."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in (MANIFEST, _STAMP):
            rel = p.relative_to(folder).as_posix()
            files[rel] = {"size": p.stat().st_size, "sha256": sha256(p)}
    return files


def write(folder: Path, manifest: dict) -> None:
    manifest = dict(manifest, format=FORMAT_VERSION, files=describe_files(folder))
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, folder / MANIFEST)


def read(folder: str | os.PathLike, verify: bool = True) -> dict:
    """Read and check a model folder's manifest; raise ModelFolderError naming what is wrong."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist; run `lens export MODEL` first")
    if not path.is_file():
        raise ModelFolderError(f"{folder} has no {MANIFEST}: not an exported lens model, or its export "
                               f"did not finish; run `lens export --force` again")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelFolderError(f"{path} is corrupt ({e.__class__.__name__}); re-export the model "
                               f"with `lens export --force`") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise ModelFolderError(f"{folder} was exported by an incompatible lens (format "
                               f"{manifest.get('format')}); re-export it with `lens export --force`")
    for required in (GRAPH, WEIGHTS, TOKENIZER, CONFIG):
        if required not in files:
            raise ModelFolderError(f"{path} lists no {required}; re-export with `lens export --force`")
    if verify:
        _verify(folder, files)
    return manifest


def _verify(folder: Path, files: dict) -> None:
    stamp_path = folder / _STAMP
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}
    fresh = {}
    for rel, want in files.items():
        p = folder / rel
        if not p.is_file():
            raise ModelFolderError(f"{folder}: file {rel} is missing; re-export with `lens export --force`")
        st = p.stat()
        if st.st_size != want["size"]:
            raise ModelFolderError(f"{folder}: file {rel} has {st.st_size} bytes, the manifest says "
                                   f"{want['size']} (truncated or replaced); re-export with `lens export --force`")
        key = [st.st_size, st.st_mtime_ns, want["sha256"]]
        if stamp.get(rel) != key:
            if sha256(p) != want["sha256"]:
                raise ModelFolderError(f"{folder}: file {rel} does not match its sha256 in the manifest "
                                       f"(corrupt); re-export with `lens export --force`")
        fresh[rel] = key
    if fresh != stamp:
        try:  # a read-only model folder is fine: we just hash again next time
            stamp_path.write_text(json.dumps(fresh))
        except OSError:
            pass
