"""Helpers shared by the benchmarks: random-weight models of real shapes, built once and cached."""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CACHE = Path(os.environ.get("LENS_BENCH_CACHE", Path.home() / ".cache" / "lens-bench"))


def model_pair(shape: str):
    """(checkpoint folder, exported lens folder) for a random GPT-2 of `shape`, cached on disk."""
    from lens.export import export_model
    from lens.testing import build_random_gpt2

    src = CACHE / "src" / shape
    if not (src / "config.json").is_file():
        build_random_gpt2(src, shape, seed=0)
    return src, export_model(str(src), models_dir=CACHE / "models", validate=False)


def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def prompt_ids(n: int, seed: int = 0):
    import numpy as np
    return np.random.default_rng(seed).integers(0, 50000, size=n).tolist()


def torch_attribution_loop(model, ids, n_prompt: int):
    """What Ecco, inseq and Captum do: per generated token, a forward and a backward on its prefix,
    then grad x input (L2 over the embedding)."""
    import torch

    wte = model.get_input_embeddings().weight.detach()
    tids = torch.as_tensor(ids)
    for pos in range(n_prompt, len(ids)):
        e = wte[tids[:pos]].clone().requires_grad_(True)
        model(inputs_embeds=e[None]).logits[0, -1, tids[pos]].backward()
        (e.grad * e).norm(dim=-1)


def inseq_smollm2(torch_model, method: str = "input_x_gradient"):
    """inseq 0.7.1 on SmolLM2's PyTorch model, its tokenizer without the BOS lens does not add either
    (the GGUF's tokenizer prepends <|im_start|>), so both see the same tokens."""
    import inseq
    from transformers import AutoTokenizer

    from lens.export.sources import resolve_source
    src, _, gguf = resolve_source("smollm2")
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
    tok.add_bos_token = False
    return inseq.load_model(torch_model, method, tokenizer=tok)
