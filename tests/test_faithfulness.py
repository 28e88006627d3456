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
    f = expl.settings["faithfulness"]
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
