"""The two real models that install offline, side by side: Gemma 3 270M (18 layers x 640, a 262,144-token
vocabulary) and SmolLM2-135M (30 layers x 576, 49,152 tokens). Explain 20 + 20 tokens (grad x input) on
the article's Shakespeare prompt, each stage's median time, and the logit lens and report per
vocabulary entry (their cost grows with the vocabulary), same run; with --export, each model's export
time and peak memory in a fresh process.

    python bench/bench_gemma3.py [--repeats 3] [--export]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import CACHE, median_time

PROMPT = "William Shakespeare was born in the year 1564 in Stratford-upon-Avon, England. He"


def export_figures(name: str) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of `lens export NAME --force` in a fresh process of its own."""
    code = ("import resource, sys; from lens.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, "-q", "export", name, "--force", "--models-dir",
                          str(CACHE / "export-bench")], check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, int(out.split()[-1]) / 2 ** 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new", type=int, default=20)
    ap.add_argument("--export", action="store_true")
    args = ap.parse_args()

    import lens
    from lens.export import export_model

    rows = {}
    for name in ("smollm2", "gemma3"):
        explainer = lens.Explainer.load(export_model(name, models_dir=CACHE / "models", validate=False))
        expl = explainer.explain(PROMPT, max_new_tokens=args.new)  # compile (or load from the persistent cache)
        runs = []

        def run():
            e = explainer.explain(PROMPT, max_new_tokens=args.new)
            t = time.perf_counter()
            e.report(CACHE / f"{name}.html")
            runs.append(dict(e.timings, report=time.perf_counter() - t))

        total = median_time(run, args.repeats, warmup=0)
        stage = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}
        rows[name] = dict(total=total, vocab=explainer.model.d_vocab, layers=explainer.model.n_layers,
                          tokens=expl.n_tokens, generated=expl.generated, **stage)
    for name, r in rows.items():
        lens_rows = r["layers"] * r["tokens"]
        print(f"{name:8s} explain {r['total']:.2f} s (generate {r['generate']:.2f}, grad x input "
              f"{r['attribution/grad_x_input']:.2f}, logit lens {r['logit_lens']:.2f}, report {r['report']:.2f}); "
              f"logit lens {1e9 * r['logit_lens'] / (lens_rows * r['vocab']):.2f} ns per (row, vocabulary entry); "
              f"generated {r['generated']!r}")
    s, g = rows["smollm2"], rows["gemma3"]
    per = lambda r: r["logit_lens"] / (r["layers"] * r["tokens"] * r["vocab"])
    print(f"logit lens per (row, vocabulary entry): gemma3 / smollm2 = {per(g) / per(s):.2f}")
    if args.export:
        for name in ("smollm2", "gemma3"):
            seconds, peak = export_figures(name)
            print(f"lens export {name}: {seconds:.0f} s, peak RSS {peak:.1f} GB")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
