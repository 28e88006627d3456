"""Generation + full tapped pass: lens (ONNX Runtime) against transformers `generate` capturing the
same data (hidden states and MLP activations through forward hooks), same weights, same run.

    python bench/bench_runtime.py [--shapes distilgpt2 gpt2] [--repeats 5]
"""
from __future__ import annotations

import argparse

from common import median_time, model_pair, prompt_ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["distilgpt2", "gpt2"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompt", type=int, default=20)
    ap.add_argument("--new", type=int, default=20)
    args = ap.parse_args()

    import torch
    from transformers import GPT2LMHeadModel

    import lens

    print(f"prompt {args.prompt} tokens, {args.new} new, median of {args.repeats}; torch = transformers "
          f"generate with output_hidden_states and MLP hooks")
    print(f"{'shape':<12}{'torch s':>9}{'gen+pass s':>12}{'ratio':>8}{'gen(trace) s':>14}{'ratio':>8}")
    for shape in args.shapes:
        src, folder = model_pair(shape)
        model = lens.load(folder)
        ref = GPT2LMHeadModel.from_pretrained(src).eval()
        ids = prompt_ids(args.prompt)

        def run_lens():  # generation, then one full-sequence pass with all taps
            gen = model.generate(ids, max_new_tokens=args.new, stop_at_eos=False)
            return model.run(gen.token_ids)

        def run_lens_trace():  # the taps collected by the generating calls themselves (what explain uses)
            return model.generate(ids, max_new_tokens=args.new, stop_at_eos=False, trace=True)

        def run_torch():
            acts = []
            handles = [b.mlp.act.register_forward_hook(lambda m, i, o: acts.append(o.detach()))
                       for b in ref.transformer.h]
            try:
                with torch.no_grad():
                    out = ref.generate(torch.tensor([ids]), max_new_tokens=args.new, min_new_tokens=args.new,
                                       do_sample=False, output_hidden_states=True,
                                       return_dict_in_generate=True, pad_token_id=50256)
            finally:
                for h in handles:
                    h.remove()
            return out, acts

        t_torch = median_time(run_torch, args.repeats)
        t_lens = median_time(run_lens, args.repeats)
        t_trace = median_time(run_lens_trace, args.repeats)
        print(f"{shape:<12}{t_torch:>9.3f}{t_lens:>12.3f}{t_torch / t_lens:>7.2f}x{t_trace:>14.3f}"
              f"{t_torch / t_trace:>7.2f}x", flush=True)


if __name__ == "__main__":
    main()
