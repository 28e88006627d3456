"""Display text of single tokens. A byte-level BPE token can hold part of a multi-byte UTF-8
character; decoded alone it would be U+FFFD, so its bytes are shown as \\xNN instead."""
from __future__ import annotations


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte <-> printable character table used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


def token_string(tokenizer, i: int) -> str:
    """Text of token `i` alone (a `tokenizers.Tokenizer`); split UTF-8 bytes as \\xNN."""
    text = tokenizer.decode([i], skip_special_tokens=False)
    if "\ufffd" not in text:
        return text
    piece = tokenizer.id_to_token(i) or ""
    raw = bytes(_BYTE_DECODER.get(ch, ord("?")) for ch in piece)
    return raw.decode("utf-8", errors="backslashreplace")
