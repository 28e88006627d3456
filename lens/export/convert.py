"""`lens export`: a Hugging Face GPT-2 checkpoint -> a self-contained, validated lens model folder.

Stages: resolve the source (hub id or local folder) -> check the architecture -> optimum ONNX export
(text-generation-with-past: one graph serves KV-cached steps and full passes) -> add named taps ->
weights as safetensors, tokenizer.json, config -> validate against PyTorch -> manifest -> rename
into place. Everything is written to a temporary sibling folder; any failure or interruption
removes it, so `models/` never holds a half-written model.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from .. import __version__, manifest
from ..export_paths import default_models_dir, model_name
from ..errors import LensError

SUPPORTED = {"gpt2": "GPT-2 family (gpt2, distilgpt2, gpt2-medium/large/xl, DialoGPT, ...)"}
_PROTO_LIMIT = 2_000_000_000  # protobuf's 2 GB cap: bigger graphs keep weights as external data


def export_model(source: str, models_dir: str | os.PathLike | None = None, name: str | None = None,
                 force: bool = False, validate: bool = True, revision: str | None = None,
                 progress: Callable[[str], None] | None = None) -> Path:
    """Export `source` (hub id or local `save_pretrained` folder) into `models_dir/name`; return it."""
    say = progress or (lambda msg: None)
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    target = models_dir / (name or model_name(source))
    if (target / manifest.MANIFEST).is_file() and not force:
        manifest.read(target)  # reuse only a complete, uncorrupted export
        say(f"reusing {target} (use --force to export again)")
        return target
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=models_dir))
    except OSError as e:
        raise LensError(f"cannot write to {models_dir}: {e.strerror}") from None
    try:
        with _terminate_as_interrupt():
            _export_into(work, source, revision, validate, say)
            say(f"[6/6] moving into {target}")
            _replace_dir(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt so `kill` cleans up like Ctrl-C does."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _replace_dir(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _export_into(work: Path, source: str, revision: str | None, validate: bool, say) -> None:
    say(f"[1/6] resolving {source}")
    src, resolved_revision = resolve_source(source, revision)
    config = _read_config(src)

    say("[2/6] exporting to ONNX with optimum")
    model = _load_torch_model(src)
    n_params = sum(p.numel() for p in model.parameters())
    onnx_dir = work / "optimum"
    _optimum_export(src, onnx_dir, big=n_params * 4 > _PROTO_LIMIT)

    say("[3/6] adding activation taps")
    taps = _tap_graph(onnx_dir, work, config)

    say("[4/6] writing weights, tokenizer and config")
    model.save_pretrained(work, safe_serialization=True, max_shard_size="1000GB")
    tokenizer = _save_tokenizer(src, work)
    shutil.rmtree(onnx_dir)

    dims = dict(n_layers=config["n_layer"], d_model=config["n_embd"], n_heads=config["n_head"],
                d_mlp=config.get("n_inner") or 4 * config["n_embd"], n_ctx=config["n_positions"],
                d_vocab=config["vocab_size"])
    data = {
        "lens_version": __version__,
        "name": model_name(source), "source": source, "revision": resolved_revision,
        "architecture": config["model_type"], **dims,
        "n_params": n_params,
        "taps": {h: _tap_shape(h, dims) for h in taps},
        "eos_token_id": tokenizer.get("eos_token_id"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if validate:
        say("[5/6] validating against PyTorch")
        from .validate import validate_export
        data["validation"] = validate_export(work, data, model)
    else:
        say("[5/6] validation skipped")
    manifest.write(work, data)


def _tap_shape(hook: str, dims: dict) -> list:
    return ["batch", "seq", dims["d_mlp"] if ".mlp." in hook else dims["d_model"]]


def resolve_source(source: str, revision: str | None = None) -> tuple[Path, str | None]:
    """A local folder as is; a hub id downloaded (config, tokenizer and weights only)."""
    if os.path.isdir(source):
        if not (Path(source) / "config.json").is_file():
            raise LensError(f"{source} has no config.json: not a Hugging Face model folder")
        if not any(Path(source).glob("*.safetensors")) and not any(Path(source).glob("pytorch_model*.bin")):
            raise LensError(f"{source} has no weights (*.safetensors or pytorch_model.bin)")
        return Path(source), None
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or os.path.exists(source):
        raise LensError(f"{source} is not a model folder and not a Hugging Face hub id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                       RevisionNotFoundError)
    try:
        path = snapshot_download(source, revision=revision, allow_patterns=[
            "*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model*.bin"])
    except RepositoryNotFoundError:
        raise LensError(f"unknown model {source!r}: no such repository on the Hugging Face hub") from None
    except GatedRepoError:
        raise LensError(f"{source} is gated on the Hugging Face hub: log in with `hf auth login`") from None
    except RevisionNotFoundError:
        raise LensError(f"{source} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise LensError(f"cannot download {source!r}: the Hugging Face hub is unreachable (no network?) "
                        f"and it is not in the local cache; pass a local folder instead") from None
    except OSError as e:
        raise LensError(f"cannot download {source!r}: {e.__class__.__name__}: {str(e).splitlines()[0]}") from None
    return Path(path), Path(path).name


def _read_config(src: Path) -> dict:
    try:
        config = json.loads((src / "config.json").read_text())
    except ValueError:
        raise LensError(f"{src}/config.json is not valid JSON") from None
    arch = config.get("model_type")
    if arch not in SUPPORTED:
        supported = "; ".join(SUPPORTED.values())
        raise LensError(f"model type {arch!r} is not supported; lens supports: {supported}")
    return config


def _load_torch_model(src: Path):
    from transformers import GPT2LMHeadModel

    try:
        return GPT2LMHeadModel.from_pretrained(src, dtype="float32").eval()
    except (OSError, ValueError, RuntimeError) as e:
        raise LensError(f"cannot load the weights in {src}: {str(e).splitlines()[0]}") from None


def _optimum_export(src: Path, out: Path, big: bool) -> None:
    import logging
    import warnings

    from optimum.exporters.onnx import main_export

    logging.getLogger("optimum").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        # Post-processing of graphs over 2 GB fails to serialise (protobuf limit): skip it there.
        main_export(str(src), out, task="text-generation-with-past", local_files_only=True,
                    do_validation=False, no_post_process=big)


def _tap_graph(onnx_dir: Path, work: Path, config: dict) -> dict[str, str]:
    import onnx

    from .optimize import gemm_for_transposed_weights
    from .taps import add_tap_outputs, find_taps

    graph_path = onnx_dir / manifest.GRAPH
    model = onnx.load(str(graph_path), load_external_data=False)
    taps = find_taps(model.graph, config["n_layer"], config["n_embd"])
    add_tap_outputs(model, taps)
    gemm_for_transposed_weights(model)
    model.ir_version = min(model.ir_version, 10)  # onnxruntime-gpu refuses newer IR versions
    external = [p for p in onnx_dir.iterdir() if p.suffix not in (".onnx", ".json", ".txt")]
    for p in external:  # external-data files keep their relative names next to the graph
        os.replace(p, work / p.name)
    onnx.save(model, str(work / manifest.GRAPH))
    return taps


def _save_tokenizer(src: Path, work: Path) -> dict:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(src, use_fast=True)
    except (OSError, ValueError) as e:
        raise LensError(f"cannot load the tokenizer in {src}: {str(e).splitlines()[0]}") from None
    if not getattr(tok, "is_fast", False):
        raise LensError(f"{src} has no fast (tokenizers) tokenizer; lens needs tokenizer.json")
    tok.backend_tokenizer.save(str(work / manifest.TOKENIZER))
    return {"eos_token_id": tok.eos_token_id}
