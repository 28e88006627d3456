"""float32 against float16 exports of the real SmolLM2 (and Gemma 3 with --gemma3), same run: folder
size, the export's validation error, the whole explain of the Shakespeare prompt + 20 tokens (median of
3, warm), and how far the float16 explanation is from the float32 one.

    python bench/bench_precision.py [--gemma3]

On a CPU float16 is a memory saving, not a speed-up: ONNX Runtime's CPU kernels and XLA's convert
half precision to float32 around most operations. The speed is a GPU's (bench/gpu_check.sh)."""
from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

from common import median_time

PROMPT = "William Shakespeare was born in the year 1564 in Stratford-upon-Avon, England. He"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gemma3", action="store_true")
    args = p.parse_args()
    import lens
    from lens.export import export_model

    sources = ["smollm2"] + (["gemma3"] if args.gemma3 else [])
    with tempfile.TemporaryDirectory() as store:
        for source in sources:
            out = {}
            for dtype in ("float32", "float16"):
                folder = export_model(source, models_dir=store, name=f"{source}-{dtype}", dtype=dtype)
                m = json.loads((folder / "manifest.json").read_text())
                size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                ex = lens.Explainer(lens.load(folder))
                expl = ex.explain(PROMPT, max_new_tokens=20)
                t = median_time(lambda: ex.explain(PROMPT, max_new_tokens=20), repeats=3)
                out[dtype] = (expl, t)
                v = m["validation"]
                print(f"{source} {dtype}: folder {size / 2**20:.0f} MiB, validation max error {v['max_relative_error']:.1e} "
                      f"of scale, {v['max_position_error']:.1e} of a position's (tolerances {v['tolerance']:.0e}, "
                      f"{v['position_tolerance']:.0e}), "
                      f"explain {t:.2f} s {expl.timings}")
            (a, ta), (b, tb) = out["float32"], out["float16"]
            same = int(np.argmax(np.append(a.token_ids != b.token_ids, True)))
            n = min(len(a.token_ids), len(b.token_ids), same)
            k = n - a.n_prompt
            saliency = np.abs(a.attributions["grad_x_input"][:k] - b.attributions["grad_x_input"][:k]).max()
            probs = np.abs(a.probabilities[:k] - b.probabilities[:k]).max()
            print(f"{source}: float16 explain {tb / ta:.2f}x the float32 time; the same tokens for {k} of "
                  f"{a.n_generated} generated; over those, saliency differs by at most {saliency:.1e}, "
                  f"probabilities by {probs:.1e}; continuations {a.generated!r} / {b.generated!r}")


if __name__ == "__main__":
    main()
