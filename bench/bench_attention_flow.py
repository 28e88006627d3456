"""Attention flow for every generated token of SmolLM2, 20-token prompt + 20 tokens: lens (scipy's
Dinic max-flow on integer capacities, each input's graph cut to the positions a path can visit)
against the authors' way (networkx's Edmonds-Karp once per (output, input) pair on the whole
layered graph), same run, same attention; networkx on the first `--reference-tokens` generated
tokens only (each takes ~half a minute), and the per-token ratio.

    python bench/bench_attention_flow.py [--reference-tokens 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from common import median_time

PROMPT = "William Shakespeare was born in the year 1564 in Stratford-upon-Avon, England. He was the"


def networkx_rows(att, n_prompt, n_rows):
    import networkx as nx

    a = 0.5 * att + 0.5 * np.eye(att.shape[-1])
    n_layers = a.shape[0]
    rows = []
    for t in range(n_prompt, n_prompt + n_rows):
        q, g = t - 1, nx.DiGraph()
        for l in range(1, n_layers + 1):
            for i in range(t):
                for j in range(i + 1):
                    g.add_edge((l, i), (l - 1, j), capacity=a[l - 1, i, j])
        row = np.array([nx.maximum_flow_value(g, (n_layers, q), (0, k), flow_func=nx.algorithms.flow.edmonds_karp)
                        for k in range(t)])
        rows.append(row / row.sum())
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reference-tokens", type=int, default=2)
    p.add_argument("--models-dir")
    args = p.parse_args()
    import lens
    from lens.methods import AttentionFlow

    explainer = lens.Explainer(lens.load("smollm2", models_dir=args.models_dir))
    ids = explainer.model.encode(PROMPT)[:20]
    gen = explainer.model.generate(ids, 20)
    a = explainer.attributor
    att, _ = a.mean_attention(gen.token_ids)
    flow_only = median_time(lambda: AttentionFlow().score_attention(att, gen.n_prompt), repeats=3)
    whole = median_time(lambda: a.attribute(gen.token_ids, gen.n_prompt, method="attention_flow"), repeats=3)
    ours = AttentionFlow().score_attention(att, gen.n_prompt)
    t = time.perf_counter()
    ref = networkx_rows(att.astype(np.float64), gen.n_prompt, args.reference_tokens)
    nx_time = time.perf_counter() - t
    err = max(float(np.abs(r - ours[i, :len(r)]).max()) for i, r in enumerate(ref))
    per_token = nx_time / args.reference_tokens
    print(f"SmolLM2, {gen.n_prompt} + {len(gen.token_ids) - gen.n_prompt} tokens, {att.shape[0]} layers: "
          f"lens attention_flow for all {len(ours)} generated tokens {whole:.3f} s with its forward "
          f"({flow_only:.3f} s the flows alone); networkx Edmonds-Karp {per_token:.1f} s per token on the first "
          f"{args.reference_tokens} (the shortest), so >= {per_token * len(ours):.0f} s for all: "
          f">= {per_token * len(ours) / whole:.0f}x; largest difference {err:.1e}")


if __name__ == "__main__":
    main()
