"""Which attribution method does SmolLM2's own behaviour support? AOPC over the article's prompts
(most-relevant-first: higher is better; least-relevant-first: lower is better), each method against a
random ranking, and the cost of measuring it relative to the attribution itself. Also each method's
time relative to grad x input, and integrated gradients' completeness error at the defaults.

    python bench/bench_faithfulness.py [--new 10]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import CACHE

PROMPTS = ["William Shakespeare was born in the year", "1, 2, 3,",
           "A list of EU countries:\n1. Austria\n2. Belgium\n3.", "The capital of France is"]
METHODS = ("grad_x_input", "gradient", "integrated_gradients", "attnlrp")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=10)
    args = ap.parse_args()

    import lens
    from lens.export import export_model

    explainer = lens.Explainer.load(export_model("smollm2", models_dir=CACHE / "models", validate=False))
    explainer.explain("warm up", max_new_tokens=2, methods=METHODS)
    rows, cost, times, complete = {}, [], {}, []
    for prompt in PROMPTS:
        explainer.explain(prompt, max_new_tokens=args.new, methods=METHODS)  # compiles this prompt's shapes
        expl = explainer.explain(prompt, max_new_tokens=args.new, methods=METHODS)
        for m in METHODS:
            times.setdefault(m, []).append(expl.timings[f"attribution/{m}"] / expl.timings["attribution/grad_x_input"])
        complete.append(expl.settings["ig_completeness_error"])
        t = time.perf_counter()
        f = explainer.faithfulness(expl)
        cost.append((time.perf_counter() - t) / sum(v for k, v in expl.timings.items() if k.startswith("attribution")))
        for m, v in f.items():
            rows.setdefault(m, []).append((v["aopc_morf"], v["aopc_lerf"]))
    print(f"SmolLM2-135M, {len(PROMPTS)} article prompts x {args.new} generated tokens")
    print(f"{'ranking':<22}{'AOPC most-first (higher better)':>34}{'least-first (lower better)':>30}")
    for m, v in rows.items():
        a = np.asarray(v)
        print(f"{m:<22}{a[:, 0].mean():>34.3f}{a[:, 1].mean():>30.3f}")
    print(f"measuring it costs {np.median(cost):.2f}x the attribution (median over prompts; "
          f"per prompt {', '.join(f'{c:.2f}x' for c in cost)})")
    print("time relative to grad_x_input (median over prompts): "
          + ", ".join(f"{m} {np.median(v):.1f}x" for m, v in times.items()))
    print(f"integrated gradients ({expl.settings['ig_steps']} steps, baseline {expl.settings['ig_baseline']!r}): "
          f"completeness error, worst token per prompt: " + ", ".join(f"{e:.0%}" for e in complete))


if __name__ == "__main__":
    main()
