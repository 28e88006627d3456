"""A SentencePiece BPE tokenizer (Gemma's) rebuilt from a GGUF file's vocabulary and scores.

transformers' GGUF conversion builds a Unigram model from what are BPE merge scores for Gemma, so
" capital" became ` c|ap|it|al` and the model answered nonsense. SentencePiece BPE merges, at every
step, the adjacent pair whose merged piece has the highest score; a `tokenizers` BPE whose merges are
ranked by that score does the same. Control tokens become special tokens, user-defined ones added
tokens (SentencePiece always cuts them out whole), and bytes without a piece fall back to <0xNN>."""
from __future__ import annotations

from pathlib import Path

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def read_vocabulary(path: Path) -> dict:
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields

    def array(key):
        f = fields[key]
        return [f.parts[i] for i in f.data]

    def scalar(key, default=None):
        return fields[key].parts[fields[key].data[0]][0].item() if key in fields else default

    return {"tokens": [bytes(t).decode("utf-8") for t in array("tokenizer.ggml.tokens")],
            "scores": [float(s[0]) for s in array("tokenizer.ggml.scores")],
            "types": [int(t[0]) for t in array("tokenizer.ggml.token_type")],
            "bos": scalar("tokenizer.ggml.bos_token_id"), "eos": scalar("tokenizer.ggml.eos_token_id"),
            "unk": scalar("tokenizer.ggml.unknown_token_id"), "pad": scalar("tokenizer.ggml.padding_token_id"),
            "space_prefix": bool(scalar("tokenizer.ggml.add_space_prefix", True))}


def merges(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """Every (left, right) whose concatenation is a normal piece, ranked by that piece's score (then
    by the split's piece ids, as transformers' SentencePieceExtractor does)."""
    vocab = {t: i for i, t in enumerate(tokens) if types[i] in (NORMAL, USER_DEFINED, BYTE)}
    ranked = []
    for i, piece in enumerate(tokens):
        if types[i] != NORMAL or len(piece) < 2:
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in vocab and right in vocab:
                ranked.append((-scores[i], vocab[left], vocab[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def gguf_spm_tokenizer(path: Path):
    """A transformers fast tokenizer equal to the GGUF's SentencePiece BPE model."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    v = read_vocabulary(path)
    tokens, types = v["tokens"], v["types"]
    model = BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges(tokens, v["scores"], types),
                unk_token=tokens[v["unk"]], byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(model)
    steps = [normalizers.Replace(" ", "▁")]
    if v["space_prefix"]:
        steps.insert(0, normalizers.Prepend("▁"))
    tok.normalizer = normalizers.Sequence(steps)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
                                    + ([decoders.Strip(" ", 1, 0)] if v["space_prefix"] else []))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, k in zip(tokens, types) if k in (CONTROL, UNKNOWN)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == USER_DEFINED])
    name = lambda key: tokens[v[key]] if v[key] is not None else None
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=name("bos"), eos_token=name("eos"),
                                  unk_token=name("unk"), pad_token=name("pad"), add_bos_token=True)
