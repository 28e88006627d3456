"""Attribution of every generated token: lens (one forward + batched VJPs in JAX) against
(a) a PyTorch per-token forward+backward loop (what Ecco, inseq and Captum do) and
(b) PyTorch one forward + one backward per token (retain_graph), same weights, same run.
Also: the rate lens achieves on the arithmetic it must do, against numpy's float32 matmul rate
measured in the same run, and a fresh process's first call with a warm compilation cache.

    python bench/bench_grad.py [--shapes distilgpt2 gpt2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from common import median_time, model_pair, prompt_ids, torch_attribution_loop


def matmul_gflops(repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((1024, 1024), dtype=np.float32)
    return 2 * 1024 ** 3 / median_time(lambda: a @ b, repeats * 4) / 1e9


def needed_gflop(n_layers: int, d: int, n_prompt: int, n_gen: int) -> float:
    """Matmul arithmetic the attributions need: one forward over the sequence, then per generated
    token a backward (input gradients only: one matmul per forward matmul) over its own prefix."""
    per_pos = 2 * n_layers * 12 * d * d                    # forward matmul flops per position
    attn = lambda L: 2 * n_layers * 2 * L * L * d          # QK^T and AV over L positions
    n = n_prompt + n_gen
    fwd = per_pos * n + attn(n)
    bwd = sum(per_pos * (n_prompt + t) + attn(n_prompt + t) for t in range(n_gen))
    return (fwd + bwd) / 1e9


def fresh_process_call(folder: str, ids: list, n_prompt: int) -> dict:
    code = f"""
import json, time
t0 = time.perf_counter()
from lens.grad import Attributor
a = Attributor({folder!r})
t1 = time.perf_counter()
a.attribute({ids!r}, {n_prompt})
t2 = time.perf_counter()
a.attribute({ids!r}, {n_prompt})
t3 = time.perf_counter()
print(json.dumps(dict(load=t1 - t0, first=t2 - t1, warm=t3 - t2)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["distilgpt2", "gpt2"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prompt", type=int, default=20)
    ap.add_argument("--new", type=int, default=20)
    args = ap.parse_args()

    import torch
    from transformers import GPT2LMHeadModel

    import lens
    from lens.grad import Attributor

    peak = matmul_gflops()
    print(f"numpy float32 matmul: {peak:.0f} GFLOP/s; prompt {args.prompt} + {args.new} generated tokens, "
          f"grad x input, median of {args.repeats}")
    print(f"{'shape':<12}{'lens s':>8}{'(a) loop s':>11}{'ratio':>7}{'(b) 1fwd s':>11}{'ratio':>7}"
          f"{'GFLOP/s':>9}{'of matmul':>10}{'fresh 1st s':>12}{'/warm':>7}")
    for shape in args.shapes:
        src, folder = model_pair(shape)
        model = lens.load(folder)
        gen = model.generate(prompt_ids(args.prompt), args.new, stop_at_eos=False)
        ids, n_p = gen.token_ids, gen.n_prompt
        ref = GPT2LMHeadModel.from_pretrained(src).eval()
        wte = ref.transformer.wte.weight.detach()
        tids = torch.as_tensor(ids)

        attributor = Attributor(folder)
        attributor.attribute(ids, n_p)  # compile (or load from the persistent cache)
        t_lens = median_time(lambda: attributor.attribute(ids, n_p), args.repeats, warmup=0)

        def one_forward():  # (b) one forward over the sequence, one backward per token
            e = wte[tids].clone().requires_grad_(True)
            logits = ref(inputs_embeds=e[None]).logits[0]
            for pos in range(n_p, len(ids)):
                (g,) = torch.autograd.grad(logits[pos - 1, tids[pos]], e, retain_graph=True)
                (g * e).norm(dim=-1)

        t_loop = median_time(lambda: torch_attribution_loop(ref, ids, n_p), args.repeats)
        t_one = median_time(one_forward, args.repeats)
        cfg = model.manifest
        gflops = needed_gflop(cfg["n_layers"], cfg["d_model"], n_p, len(ids) - n_p) / t_lens
        fresh = fresh_process_call(str(folder), ids.tolist(), n_p)
        print(f"{shape:<12}{t_lens:>8.3f}{t_loop:>11.3f}{t_loop / t_lens:>6.1f}x{t_one:>11.3f}"
              f"{t_one / t_lens:>6.1f}x{gflops:>9.0f}{gflops / peak:>9.0%}{fresh['first']:>12.3f}"
              f"{fresh['first'] / fresh['warm']:>6.1f}x", flush=True)


if __name__ == "__main__":
    main()
