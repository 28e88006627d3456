"""AttnLRP relevance from its authors' library, `lxt` (PyTorch), for the tests' comparison.

Run in a subprocess (`references.lxt_relevance`): lxt monkey-patches transformers' and torch's
classes process-wide (every nn.LayerNorm, for one), which would change every other PyTorch reference
in the test process.

    python lxt_reference.py SOURCE OUT.npz N_PROMPT ID [ID ...]     SOURCE: a checkpoint folder or "smollm2"

OUT.npz holds `relevance` [n_generated, n_tokens] (row t: the relevance of every earlier position
for the logit of token n_prompt + t; zero from that position on) and `logits` [n_generated].
"""
import sys
import types

import numpy as np
import torch

from references import logits_from_embeddings


def _import_lxt():
    # lxt's model registry imports its vision module, which needs torchvision (a text model does not):
    # stand in for that one module so the registry loads
    stub = types.ModuleType("lxt.efficient.models.vit_torch")
    stub.vision_transformer, stub.cp_LRP = types.ModuleType("vision_transformer"), {}
    sys.modules.setdefault("lxt.efficient.models.vit_torch", stub)
    import warnings
    warnings.filterwarnings("ignore", message=".*zennit.*")
    from lxt.efficient import monkey_patch
    return monkey_patch


def load(source: str):
    monkey_patch = _import_lxt()
    if source == "smollm2":
        from transformers.models.llama import modeling_llama
        monkey_patch(modeling_llama)
        from lens.testing import smollm2_torch
        return smollm2_torch(attn_implementation="eager")
    import json
    from pathlib import Path

    import importlib

    from transformers import AutoModelForCausalLM

    kind = json.loads((Path(source) / "config.json").read_text())["model_type"]
    module = importlib.import_module(f"transformers.models.{kind.replace('_text', '')}.modeling_{kind.replace('_text', '')}")
    monkey_patch(module)
    return AutoModelForCausalLM.from_pretrained(source, attn_implementation="eager", dtype=torch.float32).eval()


def relevance(model, ids, n_prompt):
    wte = model.get_input_embeddings().weight.detach()
    ids = torch.as_tensor(ids)
    out = np.zeros((len(ids) - n_prompt, len(ids)))
    logits = []
    for t in range(len(ids) - n_prompt):
        pos = n_prompt + t
        x = wte[ids[:pos]].clone().requires_grad_(True)
        logit = logits_from_embeddings(model, ids[:pos], x)[-1, ids[pos]]
        logit.backward()  # initial relevance: the logit itself (gradient 1 times the output)
        out[t, :pos] = (x * x.grad).sum(-1).detach().numpy()
        logits.append(float(logit))
    return out, np.asarray(logits)


if __name__ == "__main__":
    source, path, n_prompt, *ids = sys.argv[1:]
    rel, logits = relevance(load(source), [int(i) for i in ids], int(n_prompt))
    np.savez(path, relevance=rel, logits=logits)
