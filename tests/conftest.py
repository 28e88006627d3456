"""Shared fixtures: random-weight GPT-2 checkpoints built offline, their exports, and the PyTorch
models they came from (the independent reference every test compares against)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here: fail fast instead of retrying
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(source checkpoint, exported folder) of a 2-layer, 64-wide GPT-2 with the real vocabulary.

    initializer_range 0.2 gives peaked distributions, so greedy decoding has no float near-ties."""
    from lens.testing import build_and_export
    return build_and_export(tmp_path_factory.mktemp("tiny"), "tiny", "tiny", init=0.2)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """(source checkpoint, exported folder) of a 2-layer, 64-wide Llama with grouped-query attention."""
    from lens.testing import build_and_export
    return build_and_export(tmp_path_factory.mktemp("llama"), "tiny-llama", "tiny", init=0.2, family="llama")


@pytest.fixture(scope="session")
def distil(tmp_path_factory):
    """A random GPT-2 of distilgpt2's shape (6 layers x 768, 82M parameters)."""
    from lens.testing import build_and_export
    return build_and_export(tmp_path_factory.mktemp("distil"), "distilgpt2", "distilgpt2", seed=1)


@pytest.fixture(scope="session")
def tiny_model(tiny):
    import lens
    return lens.load(tiny[1])


@pytest.fixture(scope="session")
def tiny_explainer(tiny_model):
    import lens
    return lens.Explainer(tiny_model)


@pytest.fixture(scope="session")
def tiny_torch(tiny):
    from transformers import GPT2LMHeadModel
    return GPT2LMHeadModel.from_pretrained(tiny[0], attn_implementation="eager").eval()


@pytest.fixture(scope="session")
def distil_model(distil):
    import lens
    return lens.load(distil[1])


@pytest.fixture(scope="session")
def distil_torch(distil):
    from transformers import GPT2LMHeadModel
    return GPT2LMHeadModel.from_pretrained(distil[0], attn_implementation="eager").eval()


def export_offline(name: str, module: str, package: str, tmp_path_factory, **kw):
    """Export one of the real models that install offline (`smollm2`, `gemma3`); without its package,
    skip (fail in CI, where `make test` installs it)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{package} is not installed: `make test` installs it")
        pytest.skip(f"{package} is not installed")
    from lens.export import export_model

    return export_model(name, models_dir=tmp_path_factory.mktemp(name), **kw)


def run_cli(*args, env=None, timeout=600, stdin=None):
    """Run `python -m lens ARGS` in a subprocess; return (exit code, stdout, stderr)."""
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.run([sys.executable, "-m", "lens", *map(str, args)], capture_output=True, text=True,
                       env=full_env, timeout=timeout, input=stdin)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def cli():
    return run_cli


def synthetic_explanation(n_layers=30, n_prompt=10, n_gen=30, d_mlp=96, k=10, seed=0):
    """An Explanation of a given size with random values (views are functions of data: this tests
    their layout at real-model sizes, e.g. SmolLM2's 30 layers, without running a model)."""
    import numpy as np

    import lens

    rng = np.random.default_rng(seed)
    n = n_prompt + n_gen
    words = [" the", ",", " 1", "\n", " Paris", "ing", " ", " extraordinarily", "'s", "."]
    tokens = [words[i % len(words)] for i in range(n)]
    att = rng.random((n_gen, n)) * (np.arange(n)[None] < (n_prompt + np.arange(n_gen))[:, None])
    return lens.Explanation(
        model_name="synthetic", token_ids=np.arange(n), tokens=tokens, n_prompt=n_prompt,
        probabilities=rng.random(n_gen).astype(np.float32),
        attributions={"grad_x_input": (att / att.sum(1, keepdims=True)).astype(np.float32)},
        hidden_states=rng.normal(size=(n_layers + 1, n, 8)).astype(np.float32),
        activations=rng.gamma(0.5, 1.0, size=(n_layers, n, d_mlp)).astype(np.float32),
        ranks=rng.integers(1, 50000, size=(n_layers, n)), top_ids=rng.integers(0, 100, size=(n_layers, n, k)),
        top_probs=np.sort(rng.dirichlet(np.ones(k), size=(n_layers, n)), -1)[..., ::-1].astype(np.float32),
        top_tokens=[[[words[(j + i) % len(words)] for j in range(k)] for i in range(n)] for _ in range(n_layers)],
        watched={" Paris": rng.integers(1, 5000, size=(n_layers, n))},
        settings={"watch_tokens": {" Paris": [" Paris"]}})


@pytest.fixture
def synthetic():
    return synthetic_explanation


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, shared by a test module (tests/browser.py has the page helper)."""
    from browser import CHROMIUM, launch

    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: `make test` installs it")
        pytest.skip("chromium is not installed (make chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()
