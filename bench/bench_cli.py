"""What a user waits for: `lens explain` in a fresh process on SmolLM2-135M (20-token prompt, 20 greedy
tokens, grad x input, the report written), against inseq 0.7.1's warm in-process `model.attribute` of
the same task (input x gradient of the logit, 20 greedy tokens), measured in the same run.

    python bench/bench_cli.py [--repeats 3]

Needs inseq in this environment (`make bench` installs it): pip install inseq==0.7.1
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CACHE, median_time

PROMPT = "William Shakespeare was born in the year 1564 in Stratford-upon-Avon, England. He wrote plays and"


def cold_cli(folder, out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of one `lens explain` in a new process."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "lens", "-q", "explain", "--model", str(folder), "--prompt", PROMPT,
                        "--max-new-tokens", "20", "-o", str(out)], capture_output=True, text=True,
                       env=dict(os.environ, LENS_MODELS=str(Path(folder).parent)))
    wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(p.stderr)
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import lens
    from lens.export import export_model

    folder = export_model("smollm2", models_dir=CACHE / "models", validate=False)
    n_prompt = len(lens.load(folder, session=False).encode(PROMPT))
    tmp = Path(tempfile.mkdtemp(prefix="lens-bench-cli-"))
    cold_cli(folder, tmp / "warmup.html")  # fills JAX's persistent compilation cache, as any second use has
    runs = [cold_cli(folder, tmp / f"r{i}.html") for i in range(args.repeats)]
    walls = sorted(w for w, _ in runs)
    cli = walls[len(walls) // 2]

    from common import inseq_smollm2
    from lens.testing import smollm2_torch
    model = inseq_smollm2(smollm2_torch())
    kw = dict(generation_args={"max_new_tokens": 20, "do_sample": False}, attributed_fn="logit", show_progress=False)
    warm = median_time(lambda: model.attribute(PROMPT, **kw), args.repeats)
    print(f"SmolLM2-135M, {n_prompt}-token prompt + 20 greedy tokens, grad x input; median of {args.repeats}")
    print(f"lens explain, fresh process, report written: {cli:.2f} s (runs {', '.join(f'{w:.2f}' for w in walls)}; "
          f"peak RSS {max(r for _, r in runs):.2f} GB)")
    print(f"inseq 0.7.1 model.attribute, warm, in-process: {warm:.2f} s")
    print(f"cold CLI / inseq warm: {cli / warm:.2f}x (target <= 0.6x)")


if __name__ == "__main__":
    main()
