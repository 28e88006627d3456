"""Faithfulness (AOPC) computed by lens with batched ONNX Runtime calls equals the same definition
computed directly with PyTorch (masking positions out of attention, positions unchanged)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lens.errors import LensError
from references import report_models


def test_aopc_equals_a_direct_pytorch_computation(tiny_explainer, tiny_torch, tmp_path):
    import torch

    expl = tiny_explainer.explain("William Shakespeare was born in the year", max_new_tokens=5,
                                  methods=("grad_x_input", "gradient"), faithfulness=True)
    f = expl.aopc
    assert set(f) == {"grad_x_input", "gradient", "random"}
    for m, a in expl.attributions.items():
        for t in range(expl.n_generated):
            pos = expl.n_prompt + t
            ids = torch.as_tensor(expl.token_ids[:pos])[None]
            target, p0 = int(expl.token_ids[pos]), float(expl.probabilities[t])
            for most_first, key in ((True, "morf"), (False, "lerf")):
                order = np.argsort(-a[t, :pos] if most_first else a[t, :pos], kind="stable")
                drops = []
                for k in range(1, 10):
                    mask = torch.ones(1, pos, dtype=torch.long)
                    mask[0, order[:math.ceil(k * pos / 10)]] = 0
                    with torch.no_grad():
                        logits = tiny_torch(ids, attention_mask=mask, position_ids=torch.arange(pos)[None]).logits
                    drops.append(p0 - float(torch.softmax(logits[0, -1].double(), -1)[target]))
                assert f[m][key][t] == pytest.approx(np.mean(drops), abs=1e-5), (m, key, t)
        assert f[m]["aopc_morf"] == pytest.approx(np.mean(f[m]["morf"]))
    table = expl.faithfulness()
    assert table["gradient"] == (f["gradient"]["aopc_morf"], f["gradient"]["aopc_lerf"])
    page = expl.report(tmp_path / "r.html").read_text()
    assert "most relevant first" in report_models(page)["faithfulness"]["text"]
    with pytest.raises(LensError, match="faithfulness was not measured"):
        tiny_explainer.explain("Hi there", max_new_tokens=2).faithfulness()
    # results are fields of their own; a file of lens 0.2 kept them among the settings
    import dataclasses

    import lens
    old = dataclasses.replace(expl, settings=dict(expl.settings, faithfulness=f, devices=expl.devices), aopc={},
                              devices={})
    again = lens.Explanation.load(old.save(tmp_path / "old.npz"))
    assert again.aopc == f and again.devices == expl.devices and "faithfulness" not in again.settings


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_masked_probabilities_equal_pytorch(tiny, tiny_llama, family):
    """Rows grouped by their first masked position, each group run from the unmasked sequence's cache
    there, masked positions left out, give what one PyTorch pass per mask gives (any mask: none, the
    first, the last, most, all)."""
    import torch
    from transformers import AutoModelForCausalLM

    import lens
    src, folder = tiny if family == "gpt2" else tiny_llama
    model, ref = lens.load(folder), AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager").eval()
    rng = np.random.default_rng(5)
    ids = rng.integers(0, model.d_vocab, 12)
    masks = (rng.random((40, 12)) > rng.random((40, 1))).astype(np.int64)
    masks[0], masks[1, 0], masks[2, -1], masks[3, 6:], masks[4] = 1, 0, 0, 0, 0
    got = model.masked_probabilities(ids, masks, target=7)
    with torch.no_grad():
        logits = ref(torch.as_tensor(ids)[None].repeat(40, 1), attention_mask=torch.as_tensor(masks),
                     position_ids=torch.arange(12)[None].repeat(40, 1)).logits[:, -1].double()
    np.testing.assert_allclose(got, torch.softmax(logits, -1)[:, 7].numpy(), rtol=1e-4, atol=1e-7)


def test_prefix_groups_minimise_positions_run_plus_calls():
    from itertools import combinations

    from lens.runtime import prefix_groups
    rng = np.random.default_rng(0)
    for _ in range(30):
        n, length, call = int(rng.integers(1, 8)), 10, float(rng.integers(0, 20))
        starts = np.sort(rng.integers(0, length, n))
        kept_from = np.cumsum(rng.random((n, length))[:, ::-1] > 0.4, 1)[:, ::-1] + 1
        groups, cost = prefix_groups(starts, kept_from, call)
        assert groups[0][0] == 0 and groups[-1][1] == n and all(a[1] == b[0] for a, b in zip(groups, groups[1:]))
        price = lambda cuts: sum(call + (hi - lo) * kept_from[lo:hi, starts[lo]].max() for lo, hi in zip(cuts, cuts[1:]))
        assert price([g[0] for g in groups] + [n]) == cost
        assert cost == min(price([0, *c, n]) for r in range(n) for c in combinations(range(1, n), r))
