"""Every family lens runs, on tiny random models built from transformers' own config classes (norm
weights and biases moved off their initial values, so conventions matter; sliding windows of 4
tokens, which the prompts run past): greedy tokens, logits and every tap, gradient x input and
gradient, and the logit lens against PyTorch (eager attention), and AttnLRP against its authors'
lxt where lxt has the model."""
from __future__ import annotations

import numpy as np
import pytest

import lens
from lens.export.validate import torch_taps
from lens.testing import TINY, build_and_export
from references import assert_equal_to_lxt, assert_ranks_match, lxt_relevance, torch_logit_lens, torch_reference

PROMPT = "William Shakespeare was born in the year"  # 8 tokens, past every test model's window of 4
KINDS = sorted(TINY)
LXT = ("qwen2", "qwen3", "gemma3")  # lxt's efficient models beside llama and gpt2 (tests/test_attnlrp.py)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root, cache = tmp_path_factory.mktemp("families"), {}

    def get(kind):
        if kind not in cache:
            cache[kind] = build_and_export(root / kind, kind, family=kind, init=0.2)
        return cache[kind]
    return get


def _torch(src):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(src, attn_implementation="eager", dtype="float32").eval()


@pytest.mark.parametrize("kind", KINDS)
def test_family_equals_pytorch(kind, exported):
    import torch

    src, folder = exported(kind)
    reference = _torch(src)
    explainer = lens.Explainer.load(folder)
    expl = explainer.explain(PROMPT, max_new_tokens=6, methods=("grad_x_input", "gradient"))
    ids = expl.token_ids
    family = lens.families.get(reference.config.model_type).NAME
    assert explainer.model.manifest["architecture"] == expl.family == family

    # greedy tokens: transformers' generate, eager attention
    with torch.no_grad():
        want = reference.generate(torch.as_tensor(ids[:expl.n_prompt])[None], max_new_tokens=6, do_sample=False,
                                  pad_token_id=0)[0].numpy()
    np.testing.assert_array_equal(ids, want[:len(ids)])

    # logits and every tap of a full pass
    ref, ours = torch_taps(reference, ids[None]), explainer.model.session_run(ids, taps=True)
    for key in ["logits", *explainer.model.taps]:
        scale = max(1.0, float(np.abs(ref[key]).max()))
        assert float(np.abs(ours[key] - ref[key]).max()) <= 1e-4 * scale, key

    # gradient x input and gradient, one torch backward per generated token
    for method in ("grad_x_input", "gradient"):
        scores, signed, _ = torch_reference(reference, ids, expl.n_prompt, method)
        np.testing.assert_allclose(expl.attributions[method], scores, atol=1e-5)
        if method == "grad_x_input":
            np.testing.assert_allclose(expl.signed[method], signed, atol=1e-5 * max(1.0, np.abs(signed).max()))

    # logit-lens ranks against a PyTorch logit lens through the model's own final norm and unembedding
    assert_ranks_match(expl.ranks, torch_logit_lens(reference, ids), np.append(ids[1:], ids[-1]))


@pytest.mark.parametrize("kind", LXT)
def test_attnlrp_equals_lxt(kind, exported, tmp_path):
    from lens.grad import Attributor

    src, folder = exported(kind)
    gen = lens.load(folder).generate(PROMPT, 5, sample=True, seed=3)
    got = Attributor(folder).attribute(gen.token_ids, gen.n_prompt, method="attnlrp")
    want, logits = lxt_relevance(src, gen.token_ids, gen.n_prompt, tmp_path)
    assert_equal_to_lxt(got.signed, want)
    np.testing.assert_allclose(got.target_values, logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_patterns_equal_pytorch(kind, exported):
    """Every layer's and head's attention probabilities from the JAX port (what attention rollout and
    flow read) against transformers' `output_attentions` (eager): windows, soft-capping, q/k norms,
    parallel blocks and rotary kinds all shape them."""
    import jax.numpy as jnp
    import torch

    from lens.families import decoder
    from lens.grad import Attributor

    src, folder = exported(kind)
    reference = _torch(src)
    attributor = Attributor(folder)
    ids = np.random.default_rng(0).integers(0, attributor.wte.shape[0], 9)
    with torch.no_grad():
        want = np.stack([a[0].numpy() for a in reference(torch.as_tensor(ids)[None], output_attentions=True).attentions])
    _, got = decoder.attention_patterns(jnp.asarray(attributor.wte[ids]), attributor.params, attributor.arch)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)                  # [L, H, n, n]
    mean, _ = attributor.mean_attention(ids)
    np.testing.assert_allclose(mean, want.mean(1), atol=1e-5)
