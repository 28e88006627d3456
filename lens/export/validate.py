"""Check an exported folder against the PyTorch model it came from before it is kept."""
from __future__ import annotations

import numpy as np

from ..errors import LensError
from .reference import torch_taps

RTOL = 1e-4  # of each tensor's scale: real checkpoints have activations in the thousands


def validate_export(folder, manifest_data: dict, torch_model, lengths=(1, 7, 19), seed=0) -> dict:
    """Full passes at a few lengths and one KV-cached step; every tap and the logits must match."""
    from ..runtime import Model

    model = Model(folder, manifest_data=manifest_data)
    rng = np.random.default_rng(seed)
    worst = {}

    def compare(ours: dict, ref: dict, what: str):
        for key, want in ref.items():
            if key == "past":
                continue
            got = ours[key]
            scale = max(1.0, float(np.abs(want).max()))
            err = float(np.abs(got - want).max()) / scale
            worst[key] = max(worst.get(key, 0.0), err)
            if not err <= RTOL:
                raise LensError(f"export validation failed: {key} differs from PyTorch by {err:.2e} "
                                f"(relative to scale) on {what}")

    for n in lengths:
        ids = rng.integers(0, model.d_vocab, size=(1, min(n, model.n_ctx)))
        compare(model.session_run(ids, taps=True), torch_taps(torch_model, ids), f"a {n}-token pass")
    ids = rng.integers(0, model.d_vocab, size=(1, 6))
    ref = torch_taps(torch_model, ids[:, :5])
    ours = model.session_run(ids[:, :5], taps=False)
    compare(model.session_run(ids[:, 5:], past=ours["present"], taps=True),
            torch_taps(torch_model, ids[:, 5:], past=ref["past"]), "a KV-cached step")
    return {"max_relative_error": max(worst.values()), "per_output": worst}
