"""What an intervention costs in generation: SmolLM2 continuing a 24-token prompt by 20 tokens with every tap
(what `explain` runs), unedited against one edited hook and 30 (the graph rewritten at open: a multiply-add
with two inputs at each edited tap), runs interleaved, medians of 7; and how long opening the edited graph
takes (a second ONNX Runtime session on the same weights).

    python bench/bench_interventions.py [--models-dir DIR]
"""
from __future__ import annotations

import argparse
import statistics
import time

from common import CACHE

PROMPT = "William Shakespeare was born in the year 1564 in Stratford-upon-Avon, England. He"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", default=str(CACHE / "models"))
    args = ap.parse_args()
    import lens
    from lens import interventions as I
    from lens.export import export_model

    model = lens.load(export_model("smollm2", models_dir=args.models_dir))
    ids = model.prompt_ids(PROMPT)
    opened = {}
    t = time.perf_counter()
    one = model.intervened([I.ablate("blocks.20.mlp.hook_post", units=[17])])
    opened["one hook"] = time.perf_counter() - t
    t = time.perf_counter()
    every = model.intervened([I.scale(f"blocks.{l}.mlp.hook_post", 0.9) for l in range(model.n_layers)])
    opened["30 hooks"] = time.perf_counter() - t
    runs = {"unedited": model, "one hook": one, "30 hooks": every}
    times: dict = {k: [] for k in runs}
    for m in runs.values():
        m.generate(ids, 20, trace=True)
    for _ in range(7):
        for k, m in runs.items():
            t = time.perf_counter()
            m.generate(ids, 20, trace=True)
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["unedited"])
    print(f"SmolLM2, {len(ids)} + 20 tokens, generation with every tap: unedited {base:.3f} s")
    for k in ("one hook", "30 hooks"):
        med = statistics.median(times[k])
        print(f"  {k} edited: {med:.3f} s ({med / base:.2f}x); opening the edited graph {opened[k]:.2f} s")


if __name__ == "__main__":
    main()
