"""Time and peak memory of `lens explain` on SmolLM2 against prompt length: each length in a fresh
process (the article's text, repeated, cut to N tokens), NEW tokens generated and attributed
(grad x input), peak RSS sampled every 50 ms over the process and its children; per stage, the
time and the peak reached while it ran; the report's size. The growth exponent of the total time
and of the peak memory is the slope of log(value) against log(length) over the longest lengths.

    python bench/bench_long_prompts.py [--lengths 250 500 1000 2000 4000 8000] [--new 20]
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import CACHE

ARTICLE = Path(__file__).resolve().parents[2] / "shared" / "article-interfaces-for-explaining-transformers.txt"


def prompt_of(tokenizer, n: int) -> str:
    text = ARTICLE.read_text() if ARTICLE.is_file() else "The quick brown fox jumps over the lazy dog. " * 400
    ids = tokenizer.encode(text).ids
    while len(ids) < n:
        ids = ids + ids
    return tokenizer.decode(ids[:n - 1])  # lens prepends nothing for SmolLM2: n - 1 plus the BOS-less start


def run(models_dir: Path, n: int, new: int, out: Path) -> dict:
    import psutil
    from tokenizers import Tokenizer

    prompt = prompt_of(Tokenizer.from_file(str(models_dir / "smollm2" / "tokenizer.json")), n)
    (out / "prompt.txt").write_text(prompt)
    cmd = [sys.executable, "-m", "lens", "-v", "explain", "--models-dir", str(models_dir), "--model", "smollm2",
           "--prompt", prompt, "--max-new-tokens", str(new), "-o", str(out / f"r{n}.html")]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proc, peak = psutil.Process(p.pid), {"all": 0, "stage": 0}

    def poll():
        while p.poll() is None:
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            except psutil.Error:
                break
            peak["all"], peak["stage"] = max(peak["all"], rss), max(peak["stage"], rss)
            time.sleep(0.05)

    threading.Thread(target=poll, daemon=True).start()
    stages, last = [], ("start", 0.0)
    for line in p.stderr:
        line = line.strip()
        if line.startswith("lens: ") and "%|" not in line and not line.startswith("lens: took"):
            now = time.perf_counter() - t0
            stages.append((last[0], now - last[1], peak["stage"]))
            last, peak["stage"] = (line[6:], now), 0
    if p.wait() != 0:
        raise SystemExit(f"lens explain failed at {n} tokens")
    stages.append((last[0], time.perf_counter() - t0 - last[1], peak["stage"]))
    return dict(n=n, seconds=time.perf_counter() - t0, peak=peak["all"], stages=stages[1:],
                report=(out / f"r{n}.html").stat().st_size)


def slope(xs, ys) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000, 8000])
    ap.add_argument("--new", type=int, default=20)
    args = ap.parse_args()
    from lens.export import export_model

    models_dir = CACHE / "models"
    export_model("smollm2", models_dir=models_dir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.lengths:
            r = run(models_dir, n, args.new, Path(tmp))
            rows.append(r)
            stages = ", ".join(f"{s} {t:.0f} s / {m / 2**30:.1f} GB" for s, t, m in r["stages"])
            print(f"{n:6d} tokens + {args.new}: {r['seconds']:7.1f} s, peak RSS {r['peak'] / 2**30:5.2f} GB, "
                  f"report {r['report'] / 2**20:5.1f} MB   [{stages}]", flush=True)
    tail = rows[-3:] if len(rows) >= 3 else rows
    if len(tail) >= 2:
        ns = [r["n"] for r in tail]
        print(f"growth over {ns[0]}..{ns[-1]} tokens: time ~ n^{slope(ns, [r['seconds'] for r in tail]):.2f}, "
              f"peak RSS ~ n^{slope(ns, [r['peak'] for r in tail]):.2f}, "
              f"report ~ n^{slope(ns, [r['report'] for r in tail]):.2f}")


if __name__ == "__main__":
    main()
