"""Explain 20 + 20 tokens on the real SmolLM2-135M (Llama, 30 layers): lens (ORT generation with every
tap, batched JAX grad x input, logit lens) against PyTorch doing the same job the usual way
(transformers generate with hidden states, then a forward+backward per generated token), same run.

    python bench/bench_smollm2.py [--repeats 3]
"""
from __future__ import annotations

import argparse

from common import CACHE, median_time, torch_attribution_loop


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new", type=int, default=20)
    args = ap.parse_args()

    import torch

    import lens
    from lens.export import export_model

    folder = export_model("smollm2", models_dir=CACHE / "models", validate=False)
    explainer = lens.Explainer.load(folder)
    model = explainer.model
    from lens.testing import smollm2_torch
    ref = smollm2_torch()
    prompt = "William Shakespeare was born in the year 1564 in Stratford-upon-Avon, England. He"
    ids = model.encode(prompt)
    print(f"SmolLM2-135M, prompt {len(ids)} tokens + {args.new} generated, grad x input, median of {args.repeats}")

    def run_lens():
        return explainer.explain(prompt, max_new_tokens=args.new, methods=("grad_x_input",))

    def run_torch():
        with torch.no_grad():
            out = ref.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False,
                               output_hidden_states=True, return_dict_in_generate=True, pad_token_id=2)
        torch_attribution_loop(ref, out.sequences[0].numpy(), len(ids))

    run_lens()  # compile (or load compiled code from the persistent cache)
    t_lens = median_time(run_lens, args.repeats, warmup=0)
    t_torch = median_time(run_torch, args.repeats)
    print(f"lens {t_lens:.2f} s   torch {t_torch:.2f} s   speed-up {t_torch / t_lens:.1f}x")


if __name__ == "__main__":
    main()
