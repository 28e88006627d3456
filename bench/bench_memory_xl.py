"""Peak memory of attributing 40 generated tokens after a 40-token prompt on a gpt2-xl-shaped model
(48 layers x 1600, 1.5B parameters, random weights written straight to safetensors), which must
fit the 24 GB machines lens runs on. Attribution only (the ONNX export is not needed for it).

    python bench/bench_memory_xl.py
"""
from __future__ import annotations

import json
import resource
import time

import numpy as np

from common import CACHE


def write_random_gpt2(folder, n_layer=48, d=1600, n_head=25, n_ctx=1024, vocab=50257, seed=0):
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "model.safetensors").is_file():
        return folder
    rng = np.random.default_rng(seed)
    r = lambda *shape: (rng.standard_normal(shape, dtype=np.float32) * 0.02)
    w = {"transformer.wte.weight": r(vocab, d), "transformer.wpe.weight": r(n_ctx, d),
         "transformer.ln_f.weight": np.ones(d, np.float32), "transformer.ln_f.bias": np.zeros(d, np.float32)}
    for l in range(n_layer):
        p = f"transformer.h.{l}."
        w.update({p + "ln_1.weight": np.ones(d, np.float32), p + "ln_1.bias": np.zeros(d, np.float32),
                  p + "ln_2.weight": np.ones(d, np.float32), p + "ln_2.bias": np.zeros(d, np.float32),
                  p + "attn.c_attn.weight": r(d, 3 * d), p + "attn.c_attn.bias": np.zeros(3 * d, np.float32),
                  p + "attn.c_proj.weight": r(d, d), p + "attn.c_proj.bias": np.zeros(d, np.float32),
                  p + "mlp.c_fc.weight": r(d, 4 * d), p + "mlp.c_fc.bias": np.zeros(4 * d, np.float32),
                  p + "mlp.c_proj.weight": r(4 * d, d), p + "mlp.c_proj.bias": np.zeros(d, np.float32)})
    save_file(w, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(dict(model_type="gpt2", n_layer=n_layer, n_embd=d,
                                                        n_head=n_head, n_positions=n_ctx, vocab_size=vocab)))
    return folder


def main():
    from lens.grad import Attributor

    folder = write_random_gpt2(CACHE / "gpt2-xl-weights")
    a = Attributor(folder)
    ids = np.random.default_rng(1).integers(0, 50257, 80)
    t = time.perf_counter()
    r = a.attribute(ids, 40)
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"gpt2-xl shape, 40 + 40 tokens: {elapsed:.1f} s (first call, compile included), "
          f"peak RSS {peak:.1f} GiB, rows per chunk {a.rows_per_chunk(80)}, scores {r.scores.shape}")


if __name__ == "__main__":
    main()
