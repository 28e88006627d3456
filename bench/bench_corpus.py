"""Corpus mode's throughput on the real SmolLM2-135M: `lens corpus` (the CLI, a fresh process with a
local Ray, as a user runs it) on prompts of 32 tokens cut from Python's docstrings, forward-only
profiling and with generation + grad x input, on 1 and 2 actors, against loops in one process
measured in the same run:
  (a) `Explainer.explain` per prompt (the plain lens loop; generates --new tokens, attributes, logit lens)
  (b) `model.run` per prompt + an exact top-k merge (a hand-written forward-only profiling loop)
  (c) inseq 0.7.1 `model.attribute` per prompt (input x gradient, --new tokens: attribute-dataset's loop)

    python bench/bench_corpus.py [--prompts 1000] [--attributed 100] [--baseline 20] [--new 4]

Prompts/s are for the whole command (start-up included) and, for lens corpus, also the profiling
pass alone as the CLI reports it.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CACHE

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 32


def prompts(model, n: int) -> list[list[int]]:
    """n prompts of exactly TOKENS tokens: consecutive docstring sentences joined, then cut."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import sysconfig

    from stdlib_corpus import sentences

    out, buf = [], []
    for s in dict.fromkeys(sentences(Path(sysconfig.get_paths()["stdlib"]))):
        buf += model.encode(" " + s if buf else s)
        if len(buf) >= TOKENS:
            out.append(buf[:TOKENS])
            buf = []
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} prompts of {TOKENS} tokens in the docstrings")


def corpus(folder, prompt_file: Path, out: Path, *args) -> tuple[float, float]:
    """(wall seconds of the whole command, prompts/s of the profiling pass as the CLI reports it)."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "lens", "corpus", "--model", str(folder), "--prompts", str(prompt_file),
                        "--out", str(out), "--max-tokens", str(TOKENS), *map(str, args)],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(p.stderr)
    rate = float(re.search(r"\(([\d.]+) prompts/s\)", p.stderr).group(1))
    return wall, rate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=1000, help="prompts profiled forward-only")
    ap.add_argument("--attributed", type=int, default=100, help="prompts generated and attributed by lens corpus")
    ap.add_argument("--baseline", type=int, default=20, help="prompts for the explain and inseq loops")
    ap.add_argument("--new", type=int, default=4, help="tokens generated and attributed per prompt")
    args = ap.parse_args()

    import numpy as np

    import lens
    from lens.corpus import topk as T
    from lens.export import export_model

    folder = export_model("smollm2", models_dir=CACHE / "models", validate=False)
    explainer = lens.Explainer.load(folder)
    model = explainer.model
    ids = prompts(model, args.prompts)
    tmp = Path(tempfile.mkdtemp(prefix="lens-bench-corpus-"))
    texts = [model.decode(p) for p in ids]
    assert all(len(model.encode(t)) >= TOKENS for t in texts[:50])
    (tmp / "all.txt").write_text("\n".join(t.replace("\n", " ") for t in texts))
    (tmp / "attributed.txt").write_text("\n".join(t.replace("\n", " ") for t in texts[:args.attributed]))
    print(f"SmolLM2-135M, prompts of {TOKENS} tokens from Python's docstrings, 2 cores; prompts/s (higher is better)")
    rows = []

    # (b) a forward-only loop in one process: one model.run per prompt, an exact top-k merge
    n_run = min(200, args.prompts)
    top = T.TopK.empty(model.n_layers * model.d_mlp, 20)
    t = time.perf_counter()
    for i, p in enumerate(ids[:n_run]):
        a = model.run(p).activations[:, 1:]                                  # [layers, seq - 1, d_mlp]
        rows_ = a.transpose(1, 0, 2).reshape(a.shape[1], -1)
        top = top.merge(T.of_tokens(rows_, np.full(len(rows_), i), np.arange(1, a.shape[1] + 1), 20))
    run_rate = n_run / (time.perf_counter() - t)
    rows.append(("model.run loop + top-k, one process (forward only)", n_run, run_rate, None))

    # (a) the plain lens loop: explain every prompt (generate, attribute, logit lens)
    explainer.explain(ids[0], max_new_tokens=args.new)  # compile
    t = time.perf_counter()
    for p in ids[:args.baseline]:
        explainer.explain(p, max_new_tokens=args.new, methods=("grad_x_input",))
    explain_rate = args.baseline / (time.perf_counter() - t)
    rows.append((f"Explainer.explain loop, one process (+{args.new} tokens)", args.baseline, explain_rate, None))

    # (c) inseq, sequential
    inseq_rate = None
    try:
        from common import inseq_smollm2
        from lens.testing import smollm2_torch
        im = inseq_smollm2(smollm2_torch())
        kw = dict(generation_args={"max_new_tokens": args.new, "do_sample": False}, attributed_fn="logit",
                  show_progress=False)
        im.attribute(texts[0], **kw)
        t = time.perf_counter()
        for text in texts[:args.baseline]:
            im.attribute(text, **kw)
        inseq_rate = args.baseline / (time.perf_counter() - t)
        rows.append((f"inseq 0.7.1 attribute loop (+{args.new} tokens)", args.baseline, inseq_rate, None))
    except ImportError:
        print("inseq is not installed (pip install inseq==0.7.1): its row is left out")

    del explainer, model
    for actors in (1, 2):
        cpus = 2 // actors
        wall, rate = corpus(folder, tmp / "all.txt", tmp / f"profile{actors}", "--actors", actors,
                            "--cpus-per-actor", cpus)
        rows.append((f"lens corpus forward only, {actors} actor{'s' * (actors > 1)}", args.prompts,
                     args.prompts / wall, rate))
    for actors in (1, 2):
        cpus = 2 // actors
        wall, rate = corpus(folder, tmp / "attributed.txt", tmp / f"attributed{actors}", "--actors", actors,
                            "--cpus-per-actor", cpus, "--max-new-tokens", args.new, "--method", "grad_x_input")
        rows.append((f"lens corpus +{args.new} tokens, grad x input, {actors} actor{'s' * (actors > 1)}",
                     args.attributed, args.attributed / wall, rate))

    print(f"{'':62} {'prompts':>7} {'prompts/s':>9} {'pass 1 only':>11}")
    for name, n, rate, inner in rows:
        print(f"{name:62} {n:7d} {rate:9.2f} {'' if inner is None else f'{inner:.2f}':>11}")
    fwd = max(r[2] for r in rows if r[0].startswith("lens corpus forward"))
    att = max(r[2] for r in rows if r[0].startswith("lens corpus +"))
    print(f"forward-only corpus vs the explain loop: {fwd / explain_rate:.1f}x (target >= 5x); "
          f"vs the model.run loop: {fwd / run_rate:.2f}x")
    if inseq_rate:
        print(f"corpus with attribution vs inseq: {att / inseq_rate:.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
