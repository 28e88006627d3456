"""Peak memory of `lens export`, stage by stage: a thread samples the process's RSS every 20 ms and
each stage's line says the highest value seen during it, as a multiple of the float32 weights.

    python bench/bench_export_memory.py gemma3 [--dtype float16]
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time

import psutil


def main():
    p = argparse.ArgumentParser()
    p.add_argument("source", nargs="?", default="gemma3")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    from lens.export import export_model

    proc, peak, stop = psutil.Process(), [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    stages, t0 = [], time.perf_counter()

    def progress(msg):
        stages.append((msg, time.perf_counter(), proc.memory_info().rss, peak[0]))
        peak[0] = proc.memory_info().rss

    base = proc.memory_info().rss
    with tempfile.TemporaryDirectory() as store:
        folder = export_model(args.source, models_dir=store, progress=progress, dtype=args.dtype)
        progress("done")
        stop.set()
        import json
        n_params = json.loads((folder / "manifest.json").read_text())["n_params"]
    weights = 4 * n_params
    print(f"{args.source} ({args.dtype}): {n_params / 1e6:.0f}M parameters, float32 weights {weights / 2**30:.2f} GiB, "
          f"process before {base / 2**30:.2f} GiB, total {time.perf_counter() - t0:.0f} s")
    for (msg, t, rss, _), (_, t_next, _, peak_during) in zip(stages, stages[1:]):
        print(f"  {msg[:60]:60s} {t_next - t:6.1f} s  from {rss / 2**30:5.2f} GiB, peak {peak_during / 2**30:5.2f} GiB = "
              f"{peak_during / weights:4.1f}x")
    print(f"peak {max(s[3] for s in stages) / 2**30:.2f} GiB = {max(s[3] for s in stages) / weights:.1f}x the float32 weights")


if __name__ == "__main__":
    main()
