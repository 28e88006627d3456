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
    return GPT2LMHeadModel.from_pretrained(tiny[0]).eval()


@pytest.fixture(scope="session")
def distil_model(distil):
    import lens
    return lens.load(distil[1])


@pytest.fixture(scope="session")
def distil_torch(distil):
    from transformers import GPT2LMHeadModel
    return GPT2LMHeadModel.from_pretrained(distil[0]).eval()


def run_cli(*args, env=None, timeout=600, stdin=None):
    """Run `python -m lens ARGS` in a subprocess; return (exit code, stdout, stderr)."""
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.run([sys.executable, "-m", "lens", *map(str, args)], capture_output=True, text=True,
                       env=full_env, timeout=timeout, input=stdin)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture
def cli():
    return run_cli
