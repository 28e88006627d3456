"""What each `lens` subcommand does with its parsed arguments."""
from __future__ import annotations

import json
import os
import sys
import time

from .. import settings as S
from ..errors import LensError, require
from ..files import output_path, same_file
from .options import settings_from


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
    from ..export import export_model

    path = export_model(args.model, models_dir=args.models_dir, name=args.name, force=args.force,
                        validate=not args.no_validate, revision=args.revision, bos=args.bos, progress=_stage,
                        dtype=args.dtype, attention_taps=args.attention_taps)
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
    from ..analysis.neurons import select_layers
    from ..pipeline import Explainer

    layers = _layers(args.layers)
    options = _report_options(args, layers)  # the report's options are checked before the slow stages
    if args.no_attribution and hasattr(args, "methods"):
        raise LensError("--no-attribution and --method contradict each other")
    settings = settings_from(args, S.ExplainSettings, **({"methods": ()} if args.no_attribution else {}))
    prompt = _read_prompt(args.prompt)
    if args.output is None and not args.json:
        args.output = "report.html"
    report = output_path(args.output, "report") if args.output is not None else None  # bad paths fail early
    if args.save is not None:
        output_path(args.save, "--save")
        if report is not None and same_file(args.save, report):
            raise LensError("--save and -o name the same file")
    explainer = Explainer.load(args.model, models_dir=args.models_dir)
    if layers is not None:  # check before the slow stages
        select_layers(explainer.model.n_layers, layers)
    if args.heatmap_layer is not None:
        select_layers(explainer.model.n_layers, args.heatmap_layer)
    n_tokens = len(explainer.model.prompt_ids(prompt)) + explainer.new_tokens(settings)
    n_factorised = n_tokens - (0 if args.include_first else 1)  # the report's rule: the first position is left out
    if args.factors and args.factors > n_factorised:
        raise LensError(f"--factors {args.factors} is more than the {n_factorised} positions factorised allow "
                        f"({n_tokens} tokens{'' if args.include_first else ', the first left out'})")
    edits = _interventions(args, explainer.model, layers)
    if edits and args.causal_factors:
        raise LensError("--causal-factors measures the unedited model: not with --ablate, --ablate-head, "
                        "--ablate-factor or --steer")
    _stage("loading")
    explainer.prepare(settings)                        # JAX set-up while the ORT session opens on its thread
    from ..viz import report as _                       # noqa: F401 - Bokeh's import too: generation waits for the session
    expl = explainer.explain(prompt, settings, progress=_stage, bars=VERBOSITY["level"] >= 1, interventions=edits)
    if args.causal_factors and expl.n_generated:
        _stage("causal factors")
        t = time.perf_counter()
        explainer.causal_factors(expl, args.factors or min(S.DEFAULT_FACTORS, n_factorised), layers,
                                 include_first=args.include_first)
        expl.timings["causal_factors"] = time.perf_counter() - t
    if args.factor_saliency:
        _stage("factor saliency")
        t = time.perf_counter()
        explainer.factor_saliency(expl, args.factors or min(S.DEFAULT_FACTORS, n_factorised), layers,
                                  include_first=args.include_first)
        expl.timings["factor_saliency"] = time.perf_counter() - t
    out = None
    if report is not None:
        _stage("writing the report")
        t = time.perf_counter()
        out = expl.report(report, **options)  # first: a failing report replaces no saved file
        expl.timings["report"] = time.perf_counter() - t
    if args.save:
        expl.save(args.save, compress=args.compress)
    if args.json:
        print(json.dumps(dict(expl.to_dict(), report=None if out is None else str(out), saved=args.save),
                         ensure_ascii=False))
    else:
        print(expl.summary())
        print(f"report: {out}" + (f"\nsaved: {args.save}" if args.save else ""))
    _stage("took " + ", ".join(f"{k} {v:.2f} s" for k, v in expl.timings.items()))
    return 0


def _interventions(args, model, layers) -> list:
    """--ablate, --ablate-factor and --steer as `lens.interventions` objects, checked against the model."""
    from .. import interventions as I

    dims = I.Dims.of(model.manifest)
    out: list = [I.parse_neuron(a, dims) for a in args.ablate] + [I.parse_head(a, dims) for a in args.ablate_head]
    for k in args.ablate_factor:  # numbered from 1, as the report shows them
        if k < 1:
            raise LensError(f"--ablate-factor {k}: factors are numbered from 1, as in the report")
    out += [I.RemoveFactor(k - 1, args.factors, layers, args.include_first) for k in args.ablate_factor]
    out += [I.parse_steer(a, dims) for a in args.steer]
    return out


def cmd_patch(args) -> int:
    from ..pipeline import Explainer

    if args.output is None and not args.json:
        args.output = "patching.html"
    out = output_path(args.output, "patching page") if args.output is not None else None
    explainer = Explainer.load(args.model, models_dir=args.models_dir)
    _stage("patching")
    result = explainer.patch(args.clean, args.corrupted, args.answer, args.foil)
    if out is not None:
        from ..viz.patching import save_patching
        save_patching(result, out)
    if args.json:
        print(json.dumps(dict(result.to_dict(), page=None if out is None else str(out)), ensure_ascii=False))
    else:
        print(result.summary())
        print(f"page: {out}")
    _stage("took " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()))
    return 0


def _report_options(args, layers) -> dict:
    if args.factors is not None and args.factors < 1:
        raise LensError("--factors must be >= 1")
    if args.heatmap_neurons < 1:
        raise LensError("--heatmap-neurons must be >= 1")
    return dict(factors=args.factors, layers=layers, include_first=args.include_first,
                heatmap_layer=args.heatmap_layer, heatmap_neurons=args.heatmap_neurons)


def cmd_render(args) -> int:
    from ..explanation import Explanation

    out = output_path(args.output, "report")
    if same_file(args.explanation, out):
        raise LensError("the report would overwrite the explanation it is rendered from; choose another -o")
    options = _report_options(args, _layers(args.layers))
    expl = Explanation.load(args.explanation)
    out = expl.report(out, **options)
    print(f"report: {out}")
    return 0


def cmd_compare(args) -> int:
    from ..explanation import Explanation
    from ..viz.compare import save_comparison

    if args.output is None and not args.json:
        args.output = "compare.html"
    out = output_path(args.output, "comparison") if args.output is not None else None
    if out is not None and (same_file(args.first, out) or same_file(args.second, out)):
        raise LensError("the page would overwrite an explanation it compares; choose another -o")
    a = Explanation.load(args.first)
    b = a if same_file(args.first, args.second) else Explanation.load(args.second)
    cmp = a.compare(b, args.method, args.other_method)
    if out is not None:
        save_comparison(cmp, out)
    if args.json:
        print(json.dumps(dict(cmp.to_dict(), page=None if out is None else str(out)), ensure_ascii=False))
    else:
        print(f"A: {cmp.names[0]}\nB: {cmp.names[1]}")
        for i in cmp.order():
            r = int(cmp.rows[i])
            print(f"  position {r}: {cmp.tokens[0][r]!r} / {cmp.tokens[1][cmp.align[r]]!r}  {cmp.disagreement[i]:.0%} apart")
        print(f"page: {out}")
    return 0


def cmd_list(args) -> int:
    from ..store import default_models_dir, list_models

    store = args.models_dir or default_models_dir()
    models = list_models(store)
    if args.json:
        print(json.dumps({"store": str(store), "models": models}))
        return 0
    print(f"model store: {store}")
    for m in models:
        shape = f"{m['architecture']} {m['n_layers']} x {m['d_model']} {m['dtype']}" if m["architecture"] else m["state"]
        print(f"  {m['name']:<28} {shape:<30} {m['bytes'] / 2**20:8.0f} MiB  {m['folder']}")
    if not models:
        print("  (none: `lens export smollm2` exports the one model that installs offline)")
    return 0


def cmd_info(args) -> int:
    from ..version import __version__
    from ..store import default_models_dir

    info = {"lens": __version__, "python": sys.version.split()[0], "model store": str(default_models_dir())}
    try:
        import onnxruntime as ort
        from ..runtime import _providers
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
    from ..corpus import run_corpus

    layers = _layers(args.layers)
    settings = settings_from(args, S.CorpusSettings,
                             layers=None if layers is None else (layers, layers) if isinstance(layers, int) else layers)
    out = run_corpus(args.model, args.prompts, args.out, settings, models_dir=args.models_dir,
                     ray_address=args.ray_address, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                     progress=VERBOSITY["level"] >= 1, say=_stage)
    for name in ("examples.parquet", "top_activations.parquet", "factors.npz", "factors.parquet", "report.html"):
        if (out / name).exists():
            print(out / name)
    return 0


def cmd_serve(args) -> int:
    from ..serve import serve

    limits = settings_from(args, S.ServeSettings)
    serve(args.model, models_dir=args.models_dir, limits=limits, show=False)
    return 0


