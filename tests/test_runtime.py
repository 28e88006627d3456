"""The exported graph and the ORT engine against PyTorch `transformers` on the same weights."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lens import hooks
from lens.export.validate import torch_taps
from lens.store import sha256

ATOL = 1e-4


def _assert_taps_match(ours: dict, ref: dict, n_layers: int):
    assert np.abs(ours["logits"] - ref["logits"]).max() <= ATOL
    for name in hooks.all_taps(n_layers):
        diff = np.abs(ours[name] - ref[name]).max()
        assert diff <= ATOL, f"{name}: {diff}"


def test_tokenizer_is_gpt2s(tiny_model):
    assert tiny_model.encode(" 1564") == [1315, 2414]
    assert tiny_model.encode("Hello world") == [15496, 995]
    assert tiny_model.token_strings([1315, 2414, 50256]) == [" 15", "64", "<|endoftext|>"]


@pytest.mark.parametrize("text", ["日本", "Hi 🙂!", "café", "naïve 😀😀"])
def test_split_characters_are_labelled_in_context(tiny_model, text):
    """A token holding part of a multi-byte character shows that character and which part it is."""
    ids = tiny_model.encode(text)
    shown = tiny_model.token_strings(ids)
    assert tiny_model.decode(ids) == text and "\ufffd" not in "".join(shown)
    for tok, i in zip(shown, ids):
        alone = tiny_model.tokenizer.decode([int(i)])
        if "\ufffd" in alone:  # a partial character: "X[k/n]" with X a character of the text
            ch, part = tok.split("[", 1)
            assert ch and ch in text and part.endswith("]"), tok
        else:
            assert tok == alone
    emoji = tiny_model.token_strings(tiny_model.encode("🙂"))
    assert len(emoji) >= 2 and emoji == [f"🙂[{k}/{len(emoji)}]" for k in range(1, len(emoji) + 1)]
    assert all(s.startswith("\\x") for s in tiny_model.isolated_strings(tiny_model.encode("🙂")))


@pytest.mark.parametrize("n", [1, 5, 33])
def test_full_pass_matches_pytorch(tiny_model, tiny_torch, n):
    ids = np.random.default_rng(n).integers(0, 50257, size=(1, n))
    ours = tiny_model.session_run(ids, taps=True)
    _assert_taps_match(ours, torch_taps(tiny_torch, ids), tiny_model.n_layers)


def test_trace_layout_matches_pytorch(tiny_model, tiny_torch):
    ids = np.asarray(tiny_model.encode("The quick brown fox jumps over the lazy dog"))
    trace = tiny_model.run(ids)
    ref = torch_taps(tiny_torch, ids[None])
    n = tiny_model.n_layers
    assert trace.hidden_states.shape == (n + 1, len(ids), 64)
    assert trace.activations.shape == (n, len(ids), 256)
    want_hidden = np.stack([ref[hooks.EMBED][0]] + [ref[hooks.resid_post(l)][0] for l in range(n)])
    np.testing.assert_allclose(trace.hidden_states, want_hidden, atol=ATOL, rtol=0)
    np.testing.assert_allclose(trace.activations, np.stack([ref[hooks.mlp_post(l)][0] for l in range(n)]),
                               atol=ATOL, rtol=0)
    np.testing.assert_allclose(trace.ln_final, ref[hooks.LN_FINAL][0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(trace.logits, ref["logits"][0], atol=ATOL, rtol=0)


def test_kv_cached_steps_match_pytorch(tiny_model, tiny_torch):
    ids = np.random.default_rng(7).integers(0, 50257, size=(1, 12))
    ours = tiny_model.session_run(ids[:, :8])
    ref = torch_taps(tiny_torch, ids[:, :8])
    for i in range(8, 12):  # four single-token steps on a growing cache
        ours = tiny_model.session_run(ids[:, i:i + 1], past=ours["present"], taps=True)
        ref = torch_taps(tiny_torch, ids[:, i:i + 1], past=ref["past"])
        _assert_taps_match(ours, ref, tiny_model.n_layers)


def test_greedy_matches_transformers_generate(tiny_model, tiny_torch):
    import torch

    for prompt in ["William Shakespeare was born in the year", "1, 2, 3, 4,"]:
        ids = tiny_model.encode(prompt)
        gen = tiny_model.generate(prompt, max_new_tokens=20)
        with torch.no_grad():
            want = tiny_torch.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                                       pad_token_id=50256)[0].numpy()
        np.testing.assert_array_equal(gen.token_ids, want)
        assert gen.n_prompt == len(ids)
        # each probability is p(token) under the full-pass logits at the previous position
        logits = tiny_model.run(gen.token_ids).logits[gen.n_prompt - 1:-1].astype(np.float64)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        np.testing.assert_allclose(gen.probabilities, p[np.arange(len(p)), gen.generated_ids], rtol=1e-4)


def test_sampling_is_seeded(tiny_model):
    a = tiny_model.generate("Hello", 15, sample=True, temperature=1.3, top_k=50, top_p=0.9, seed=3)
    b = tiny_model.generate("Hello", 15, sample=True, temperature=1.3, top_k=50, top_p=0.9, seed=3)
    c = tiny_model.generate("Hello", 15, sample=True, temperature=1.3, top_k=50, top_p=0.9, seed=4)
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    assert not np.array_equal(a.token_ids, c.token_ids)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, None, None), (1.0, 10, None),
                                                     (1.5, None, 0.8), (0.9, 40, 0.95)])
def test_sampling_distribution_matches_transformers_warpers(temperature, top_k, top_p):
    import torch
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    from lens.sampling import distribution

    logits = np.random.default_rng(0).normal(size=1000) * 3
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p:
        warpers.append(TopPLogitsWarper(top_p))
    want = torch.softmax(warpers(None, torch.tensor(logits[None])), -1)[0].numpy()
    got = distribution(logits, temperature, top_k, top_p)
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_manifest_describes_the_folder(tiny):
    folder = tiny[1]
    m = json.loads((folder / "manifest.json").read_text())
    assert m["architecture"] == "gpt2" and m["n_layers"] == 2 and m["d_mlp"] == 256
    assert list(m["taps"]) == hooks.all_taps(2) + hooks.head_taps(2)
    assert m["taps"]["blocks.1.attn.hook_z"] == ["batch", "seq", 64]
    assert m["taps"]["blocks.1.mlp.hook_post"] == ["batch", "seq", 256]
    assert set(m["files"]) == {"model.onnx", "model.onnx.data", "model.safetensors", "tokenizer.json", "config.json",
                               "generation_config.json"}
    for rel, info in m["files"].items():
        assert sha256(folder / rel) == info["sha256"]
    assert m["validation"]["max_relative_error"] < 1e-5
    assert m["lens_version"] and m["source"] == str(tiny[0])
    # one copy of the weights on disk: the graph's initializers, which the weight map points into;
    # only tensors under 1 KB (kept inline in the graph) are stored again, in model.safetensors
    weight_bytes = sum(m["files"][f]["size"] for f in ("model.onnx", "model.onnx.data", "model.safetensors"))
    assert weight_bytes < 1.05 * 4 * m["n_params"]
    assert m["files"]["model.safetensors"]["size"] < 20_000
    assert {k for k, w in m["weights"].items() if len(w["shape"]) == 2} >= {
        "transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.attn.c_attn.weight",
        "transformer.h.1.mlp.c_proj.weight"}


def test_graph_outputs_use_hook_names(tiny_model):
    names = [o.name for o in tiny_model.session.get_outputs()]
    assert names[0] == "logits"
    assert names[-len(tiny_model.taps) - 2:] == hooks.all_taps(2) + hooks.head_taps(2)


@pytest.mark.slow
def test_distilgpt2_shape_matches_pytorch(distil_model, distil_torch):
    ids = np.random.default_rng(1).integers(0, 50257, size=(1, 40))
    ours = distil_model.session_run(ids[:, :39], taps=True)
    ref = torch_taps(distil_torch, ids[:, :39])
    _assert_taps_match(ours, ref, 6)
    step = distil_model.session_run(ids[:, 39:], past=ours["present"], taps=True)
    _assert_taps_match(step, torch_taps(distil_torch, ids[:, 39:], past=ref["past"]), 6)


@pytest.mark.slow
def test_distilgpt2_shape_greedy_matches_generate(distil_model, distil_torch):
    import torch

    ids = distil_model.encode("William Shakespeare was born in the year")
    gen = distil_model.generate(ids, max_new_tokens=20)
    with torch.no_grad():
        want = distil_torch.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                                     pad_token_id=50256)[0].numpy()
    np.testing.assert_array_equal(gen.token_ids, want)


@pytest.mark.parametrize("sample", [False, True])
def test_generation_trace_equals_full_pass(tiny_model, tiny_torch, sample):
    gen = tiny_model.generate("The year was", 9, sample=sample, seed=5, trace=True)
    full = tiny_model.run(gen.token_ids)
    ref = torch_taps(tiny_torch, gen.token_ids[None])
    n = tiny_model.n_layers
    for got in (gen.trace, full):
        np.testing.assert_allclose(got.logits, ref["logits"][0], atol=ATOL, rtol=0)
        np.testing.assert_allclose(got.activations, np.stack([ref[hooks.mlp_post(l)][0] for l in range(n)]),
                                   atol=ATOL, rtol=0)
        np.testing.assert_allclose(got.hidden_states[-1], ref[hooks.resid_post(n - 1)][0], atol=ATOL, rtol=0)
    assert gen.trace.hidden_states.shape == (n + 1, len(gen.token_ids), 64)


@pytest.mark.parametrize("block", [1, 4, 7])
def test_prompts_in_blocks_equal_pytorch(tiny_model, tiny_torch, monkeypatch, block):
    """Long prompts go through the graph in blocks reading the cache (bounded attention memory):
    every tap and logit, of run() and of a traced generation, still equals PyTorch's single pass."""
    import torch

    import lens.runtime.model as M

    monkeypatch.setattr(M, "PREFILL_BLOCK", block)
    ids = np.random.default_rng(block).integers(0, 50257, 23)
    parts: list = []
    last = tiny_model.prefill(ids, taps=True, each=parts.append)
    assert len(parts) == -(-23 // block) and last is parts[-1] and last["present"][0].shape[2] == 23
    names = ["logits", *hooks.all_taps(tiny_model.n_layers)]
    _assert_taps_match({k: np.concatenate([p[k] for p in parts], axis=1) for k in names},
                       torch_taps(tiny_torch, ids[None]), tiny_model.n_layers)
    gen = tiny_model.generate(ids.tolist(), 4, trace=True)
    ref = torch_taps(tiny_torch, gen.token_ids[None])
    for got in (gen.trace, tiny_model.run(gen.token_ids)):
        np.testing.assert_allclose(got.logits, ref["logits"][0], atol=ATOL, rtol=0)
        np.testing.assert_allclose(got.activations[-1], ref[hooks.mlp_post(tiny_model.n_layers - 1)][0],
                                   atol=ATOL, rtol=0)
    want = tiny_torch.generate(torch.as_tensor(ids[None]), attention_mask=torch.ones(1, 23, dtype=torch.long),
                               max_new_tokens=4, do_sample=False, pad_token_id=0)[0].tolist()
    assert gen.token_ids.tolist() == want


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_batched_generation_equals_one_prompt_at_a_time(tiny, tiny_llama, family):
    """generate_batch (left padding, per-row positions, padding masked: corpus mode) gives each row
    what generate gives it alone: tokens, probabilities and every tap of the trace; a row reaching
    EOS stops there while the others go on."""
    import lens
    model = lens.load((tiny if family == "gpt2" else tiny_llama)[1])
    rng = np.random.default_rng(3)
    prompts = [rng.integers(0, 50000, n).tolist() for n in (3, 11, 1, 7, 16)]
    alone = [model.generate(p, 6, trace=True) for p in prompts]
    model.eos_ids = {int(alone[1].generated_ids[2])}  # row 1 now stops at its third token
    alone = [model.generate(p, 6, trace=True) for p in prompts]
    assert len(alone[1].generated_ids) == 3
    for got, want in zip(model.generate_batch(prompts, 6, trace=True), alone):
        assert got.token_ids.tolist() == want.token_ids.tolist() and got.n_prompt == want.n_prompt
        np.testing.assert_allclose(got.probabilities, want.probabilities, rtol=1e-4)
        for k in ("logits", "hidden_states", "activations", "ln_final"):
            a, b = getattr(got.trace, k), getattr(want.trace, k)
            assert a.shape == b.shape, k
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max(), err_msg=k)


def test_a_model_without_session_tokenizes_only(tiny, tiny_model):
    """load(session=False) (the corpus driver) encodes like the full model and refuses to run."""
    import lens
    light = lens.load(tiny[1], session=False)
    assert light.prompt_ids("William Shakespeare") == tiny_model.prompt_ids("William Shakespeare")
    with pytest.raises(lens.LensError, match="without a session"):
        light.run([1, 2])
    assert [g.token_ids.tolist() for g in tiny_model.generate_batch([[1, 2], [3]], 0)] == [[1, 2], [3]]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_logits_from_skips_the_unembedding_elsewhere(tiny, tiny_llama, family):
    """The exported graph's logits_from input: logits of positions k.. only (-1: the last, as
    generation, masked probabilities and profiling ask), equal to the full pass's; every tap keeps
    every position. A graph without the input (older exports) gives the same, sliced afterwards."""
    import lens
    model = lens.load((tiny if family == "gpt2" else tiny_llama)[1])
    assert hooks.LOGITS_FROM in model._inputs
    older = lens.load((tiny if family == "gpt2" else tiny_llama)[1])
    older.__dict__["_inputs"] = older._inputs - {hooks.LOGITS_FROM}
    ids = np.random.default_rng(3).integers(0, model.d_vocab, size=(2, 9))
    full = model.session_run(ids, taps=True)
    for k in (4, 8, -1):
        for m in (model, older):
            part = m.session_run(ids, taps=True, logits_from=k)
            assert part["logits"].shape == (2, 9 - k % 9, model.d_vocab)
            np.testing.assert_allclose(part["logits"], full["logits"][:, k:], rtol=0, atol=1e-6)
            for name in model.taps:
                np.testing.assert_array_equal(part[name], full[name])


def test_a_model_opens_its_session_in_the_background(tiny, tmp_path):
    """load returns before the ORT session exists; a graph ORT cannot open (one that still matches a
    tampered manifest) fails at first use, as a ModelFolderError, every time."""
    import shutil

    import lens
    from lens.store import ModelFolder
    dst = tmp_path / "copy"
    shutil.copytree(tiny[1], dst)
    (dst / "model.onnx").write_bytes(b"not a graph")
    folder = ModelFolder(dst)
    data = folder.read_manifest(verify=False)
    model = lens.runtime.Model(folder, manifest_data=data)   # manifest checks skipped: ORT meets the file
    for _ in range(2):
        with pytest.raises(lens.ModelFolderError, match="cannot open the model"):
            model.generate("Hello", 2)
