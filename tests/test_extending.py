"""lens extended from outside: a family and an attribution method defined in this file alone, run
through every stage (export, runtime, attribution, logit lens, report) with no edit to lens."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import lens
from lens import families, methods  # noqa: F401 - lens.methods below
from lens.families import gpt2
from lens.families.common import attention_layers
from references import assert_ranks_match, torch_logit_lens, torch_reference

WINDOW, CAP = 3, 4.0


# ---------------------------------------------------------------- a toy family: GPT-2 with a sliding
# window and soft-capped logits, its PyTorch model written here, its adapter reusing GPT-2's names
def _toy_torch_classes():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    class ToyConfig(GPT2Config):
        model_type = "toy_gpt2"
        export_model_type = "gpt2"  # optimum traces it with GPT-2's ONNX config

    class ToyLM(GPT2LMHeadModel):
        config_class = ToyConfig

        def __init__(self, config):
            super().__init__(config)
            n = config.n_positions
            band = torch.tril(torch.ones(n, n, dtype=torch.bool)) & ~torch.tril(torch.ones(n, n, dtype=torch.bool), -WINDOW)
            for block in self.transformer.h:  # eager attention's causal mask, narrowed to a window
                block.attn.bias = band.view(1, 1, n, n)
            self.lm_head.register_forward_hook(lambda mod, args, out: CAP * torch.tanh(out / CAP))

    for cls in (ToyConfig, ToyLM):  # where transformers puts a hub model's own code (trust_remote_code)
        cls.__module__ = "transformers_modules.toy"
    return ToyConfig, ToyLM


class ToyFamily:
    NAME = "toy_gpt2"
    MODEL_TYPES = ("toy_gpt2",)
    DESCRIPTION = "GPT-2 with a sliding window and soft-capped logits (a test's own family)"
    EXAMPLES = ()
    torch_modules = staticmethod(gpt2.torch_modules)

    @staticmethod
    def arch(config):
        return dataclasses.replace(gpt2.arch(config), family=ToyFamily.NAME, final_softcap=CAP)

    @staticmethod
    def params(weights, config, arch, blocks=True):
        params = gpt2.params(weights, config, arch, blocks)
        if blocks:
            params["blocks"].update(attention_layers(arch, arch.d_head ** -0.5, WINDOW))
        return params

    @staticmethod
    def torch_model(src):
        return _toy_torch_classes()[1].from_pretrained(src, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    import torch
    from transformers import GPT2TokenizerFast

    from lens.export import export_model
    from lens.testing import EOS, gpt2_tokenizer

    families.register(ToyFamily)
    ToyConfig, ToyLM = _toy_torch_classes()
    root = tmp_path_factory.mktemp("toy")
    torch.manual_seed(0)
    ToyLM(ToyConfig(vocab_size=50257, n_layer=2, n_embd=64, n_head=4, n_positions=64, initializer_range=0.2)
          ).eval().save_pretrained(root / "src")
    GPT2TokenizerFast(tokenizer_object=gpt2_tokenizer(), bos_token=EOS, eos_token=EOS, unk_token=EOS
                      ).save_pretrained(root / "src")
    return root / "src", export_model(str(root / "src"), models_dir=root / "models")


def test_a_family_defined_here_runs_through_every_stage(toy, tmp_path):
    src, folder = toy
    reference = ToyFamily.torch_model(src)
    expl = lens.Explainer.load(folder).explain("William Shakespeare was born in the year", max_new_tokens=5)
    ids = expl.token_ids
    # the window and the cap matter: the plain GPT-2 forward on the same weights differs
    scores, signed, values = torch_reference(reference, ids, expl.n_prompt)
    np.testing.assert_allclose(expl.attributions["grad_x_input"], scores, atol=1e-5)
    np.testing.assert_allclose(expl.signed["grad_x_input"], signed, atol=1e-5 * np.abs(signed).max())
    assert np.abs(values).max() <= CAP
    import torch
    from transformers import GPT2LMHeadModel
    with torch.no_grad():
        plain = GPT2LMHeadModel.from_pretrained(src, attn_implementation="eager")(torch.as_tensor(ids)[None]).logits
        toy = reference(torch.as_tensor(ids)[None]).logits
    assert float((CAP * torch.tanh(plain / CAP) - toy).abs().max()) > 0.1  # the window changes the numbers
    assert_ranks_match(expl.ranks, torch_logit_lens(reference, ids), np.append(ids[1:], ids[-1]))
    expl.report(tmp_path / "toy.html")
    assert (tmp_path / "toy.html").stat().st_size > 100_000


# ---------------------------------------------------------------- a toy method: squared gradient x input
@lens.methods.register
class SquaredGradXInput(lens.methods.Method):
    name = "squared_grad_x_input"
    description = "sum over the embedding of (gradient x input)^2 (a test's own method)"

    def score(self, grads, delta):
        return ((grads * delta[None]) ** 2).sum(-1), None


def test_a_method_defined_here_runs_through_every_stage(tiny, tiny_torch, tmp_path):
    import torch

    from lens.settings import ExplainSettings
    from references import logits_from_embeddings

    assert "squared_grad_x_input" in lens.methods.names(batchable=True)
    explainer = lens.Explainer.load(tiny[1])
    settings = ExplainSettings(methods=("squared_grad_x_input", "grad_x_input"), max_new_tokens=4, faithfulness=True)
    expl = explainer.explain("The quick brown fox", settings)
    ids = expl.token_ids
    wte = tiny_torch.get_input_embeddings().weight.detach()
    for t in range(expl.n_generated):  # torch autograd, one token at a time
        pos = expl.n_prompt + t
        x = wte[torch.as_tensor(ids[:pos])].clone().requires_grad_(True)
        logits_from_embeddings(tiny_torch, ids[:pos], x)[-1, int(ids[pos])].backward()
        want = ((x.grad * x) ** 2).sum(-1).detach().numpy()
        np.testing.assert_allclose(expl.attributions["squared_grad_x_input"][t, :pos], want / want.sum(), atol=1e-5)
    assert set(expl.aopc) == {"squared_grad_x_input", "grad_x_input", "random"}
    expl.report(tmp_path / "method.html")
    assert "squared_grad_x_input" in (tmp_path / "method.html").read_text()
    again = lens.Explanation.load(expl.save(tmp_path / "method.npz"))
    np.testing.assert_array_equal(again.attributions["squared_grad_x_input"], expl.attributions["squared_grad_x_input"])
