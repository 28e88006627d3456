"""The CUDA path end to end, on a machine with a CUDA GPU and `lens-explain[gpu,export,smollm2,gemma3]`
(bench/gpu_check.sh runs it under an 8-minute limit). Fails loudly where a check fails; prints a table.

For SmolLM2 and Gemma 3, float32 and float16 exports: ONNX Runtime on its CUDA provider and JAX on
the GPU; the whole `explain` of the Shakespeare prompt + 20 tokens (median of 3, warm) against the
same explain on the CPU engines (the same tokens; saliency within 1e-3 at float32, 5e-3 at float16);
and inseq's gradient x input on the same GPU where inseq is installed (a peer, not a reference).
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import median_time  # noqa: E402 - bench/ is the script's folder

PROMPT = "William Shakespeare was born in the year 1564 in Stratford-upon-Avon, England. He"
NEW = 20


def main() -> int:
    import jax
    import onnxruntime as ort

    import lens
    from lens.export import export_model

    providers = ort.get_available_providers()
    assert "CUDAExecutionProvider" in providers, f"ONNX Runtime has no CUDA provider here: {providers}"
    assert jax.devices()[0].platform == "gpu", f"JAX runs on {jax.devices()[0].platform}, not a GPU"
    rows = []
    with tempfile.TemporaryDirectory() as store:
        for source in ("smollm2", "gemma3"):
            for dtype in ("float32", "float16"):
                t = time.perf_counter()
                folder = export_model(source, models_dir=store, name=f"{source}-{dtype}", dtype=dtype)
                export_s = time.perf_counter() - t
                gpu = lens.Explainer(lens.load(folder, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]))
                assert gpu.model.providers[0] == "CUDAExecutionProvider", gpu.model.providers
                expl = gpu.explain(PROMPT, max_new_tokens=NEW)
                assert expl.devices.get("jax") == "gpu", expl.devices
                gpu_s = median_time(lambda: gpu.explain(PROMPT, max_new_tokens=NEW), repeats=3)
                with jax.default_device(jax.devices("cpu")[0]):
                    cpu = lens.Explainer(lens.load(folder, providers=["CPUExecutionProvider"]))
                    ref = cpu.explain(PROMPT, max_new_tokens=NEW)
                assert np.array_equal(expl.token_ids, ref.token_ids), f"{source} {dtype}: GPU and CPU continue differently"
                err = float(np.abs(expl.attributions["grad_x_input"] - ref.attributions["grad_x_input"]).max())
                assert err <= (1e-3 if dtype == "float32" else 5e-3), f"{source} {dtype}: saliency differs by {err:.2e}"
                rows.append((source, dtype, export_s, gpu_s, expl.timings, err, expl.generated))
        inseq_s = _inseq()
    print(f"{'model':9s} {'dtype':8s} {'export':>7s} {'explain':>8s} {'generate':>9s} {'grad x in':>9s} "
          f"{'logit lens':>10s} {'GPU-CPU saliency':>16s}  continuation")
    for source, dtype, export_s, gpu_s, t, err, text in rows:
        print(f"{source:9s} {dtype:8s} {export_s:6.1f}s {gpu_s:7.2f}s {t.get('generate', 0):8.2f}s "
              f"{t.get('attribution/grad_x_input', 0):8.2f}s {t.get('logit_lens', 0):9.2f}s {err:16.1e}  {text[:30]!r}")
    if inseq_s is not None:
        print(f"inseq 0.7 gradient x input, SmolLM2, same prompt and tokens on the same GPU: {inseq_s:.2f} s")
    return 0


def _inseq():
    """inseq's attribute of the same task on the GPU (median of 3), or None without inseq."""
    try:
        import inseq
    except ImportError:
        print("inseq is not installed: no peer timing")
        return None
    from lens.testing import smollm2_torch

    model = smollm2_torch().to("cuda")
    from lens.export.sources import resolve_source
    from transformers import AutoTokenizer

    folder, _, gguf = resolve_source("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    m = inseq.load_model(model, "input_x_gradient", tokenizer=tokenizer)
    return median_time(lambda: m.attribute(PROMPT, generation_args=dict(max_new_tokens=NEW, do_sample=False),
                                           attributed_fn="logit", show_progress=False), repeats=3)


if __name__ == "__main__":
    sys.exit(main())
