"""TransformerLens's own activation patching, timed: run by bench/bench_patching.py in an environment with
transformer-lens (4.x needs transformers 5, lens's export extra pins 4.x: so a second environment).

    TL_PYTHON bench/tl_patching.py CHECKPOINT_FOLDER JOB.json OUT.npz

JOB.json: {"clean": [ids], "corrupted": [ids], "answer": id, "foil": id}. Writes each heatmap (TransformerLens's
normalised metric) and its time in seconds."""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch


def main():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformer_lens import patching
    from transformer_lens.model_bridge import TransformerBridge

    folder, job_path, out_path = sys.argv[1:4]
    job = json.loads(open(job_path).read())
    torch.set_grad_enabled(False)
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    model = TransformerBridge.boot_transformers(folder, hf_model=hf, tokenizer=AutoTokenizer.from_pretrained(folder))
    model.eval()
    clean, corrupted = torch.tensor([job["clean"]]), torch.tensor([job["corrupted"]])
    answer, foil = job["answer"], job["foil"]

    def logit_diff(logits):
        return logits[0, -1, answer] - logits[0, -1, foil]

    t = time.perf_counter()
    clean_logits, cache = model.run_with_cache(clean)
    m_clean, m_corrupt = float(logit_diff(clean_logits)), float(logit_diff(model(corrupted)))
    setup = time.perf_counter() - t

    def metric(logits):
        return (logit_diff(logits) - m_corrupt) / (m_clean - m_corrupt)

    out, times = {}, {"setup": setup}
    for name, fn in (("resid_pre", patching.get_act_patch_resid_pre),
                     ("z", patching.get_act_patch_attn_head_out_all_pos),
                     ("mlp_out", patching.get_act_patch_mlp_out)):
        t = time.perf_counter()
        out[name] = fn(model, corrupted, cache, metric).float().numpy()
        times[name] = time.perf_counter() - t
    np.savez(out_path, times=json.dumps(times), clean=m_clean, corrupted=m_corrupt, **out)


if __name__ == "__main__":
    main()
