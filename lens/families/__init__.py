"""Model families: one adapter module per architecture, after TransformerLens's
`supported_architectures/`. A family is its architecture's facts (`decoder.Arch`: norms and where
they sit, attention scale, windows, soft-capping, rotary kind, activation, embedding scale) and its
weight names; the one forward in `decoder.py` runs every family, and every consumer (tap finding,
validation, attribution scoring, logit lens, AttnLRP rules) asks the family rather than assuming.

An adapter module provides:
  NAME, MODEL_TYPES (config.json model_type values), DESCRIPTION, EXAMPLES (hub ids)
  arch(config) -> Arch             refuses (LensError, one line) any config option it does not implement
  params(weights, config, arch, blocks=True) -> the params pytree of `decoder.py` from Hugging Face
                                   tensor names (blocks=False: embeddings, final norm, unembedding only)
  torch_modules(model) -> (blocks, final norm, MLP down-projections) of the transformers model: the
                                   exporter finds and checks the graph's taps against their values
and optionally `torch_model(folder)` (how to load the PyTorch reference; default: transformers'
AutoModelForCausalLM with eager attention). `register(module)` adds one, e.g. from a test file.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import LensError

BUILT_IN = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "olmo2",
            "gpt_neox", "gptj", "granite")
_REGISTRY: dict[str, ModuleType] = {}       # model_type or family name -> adapter module
REFUSED = {"mixtral": "mixture-of-experts", "qwen2_moe": "mixture-of-experts", "qwen3_moe": "mixture-of-experts",
           "deepseek_v3": "mixture-of-experts", "olmoe": "mixture-of-experts", "granitemoe": "mixture-of-experts",
           "bert": "an encoder", "roberta": "an encoder", "t5": "an encoder-decoder", "bart": "an encoder-decoder"}


def register(module) -> None:
    """Add a family adapter (a module or any object with the attributes above)."""
    if module.NAME not in BUILT_IN:
        _load_built_in()  # built-ins first, so a user's family may take over one of their model types
    for key in (module.NAME, *module.MODEL_TYPES):
        _REGISTRY[key] = module


def _load_built_in() -> None:
    for name in BUILT_IN:
        if name not in _REGISTRY:
            module = importlib.import_module(f"{__name__}.{name}")
            register(getattr(module, "family", module))  # a module, or a `common.LlamaLike` it declares


def all_families() -> list:
    _load_built_in()
    return list(dict.fromkeys(_REGISTRY.values()))


def get(config_or_name: dict | str):
    """The adapter of a config.json dict or of a model_type / family name."""
    _load_built_in()
    if not isinstance(config_or_name, (dict, str)):
        raise LensError("config.json is not a JSON object")
    name = config_or_name.get("model_type") if isinstance(config_or_name, dict) else config_or_name
    if not isinstance(name, str):
        raise LensError(f"config.json's model_type {name!r} is not a name")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in REFUSED:
        raise LensError(f"model type {name!r} is {REFUSED[name]} model: lens explains dense decoder-only models")
    raise LensError(f"model type {name!r} is not supported; lens supports: "
                    + ", ".join(sorted({m for f in all_families() for m in f.MODEL_TYPES})))


def arch(config: dict):
    """The config's `decoder.Arch`, refusing what its family does not implement."""
    if not isinstance(config, dict):
        raise LensError("config.json is not a JSON object")
    family = get(config)
    try:
        return family.arch(config)
    except KeyError as e:
        raise LensError(f"config.json has no {e.args[0]!r}: not a complete {config.get('model_type')} config") from None
    except (TypeError, ValueError) as e:
        raise LensError(f"config.json of a {config.get('model_type')} model: {e}") from None


def dims(config: dict) -> dict:
    return arch(config).dims()


def load(config: dict, weights: dict, blocks: bool = True):
    """(Arch, params pytree) of an exported model's config and weights."""
    a = arch(config)
    return a, get(config).params(weights, config, a, blocks)
