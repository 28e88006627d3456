"""Display text of the tokens of a sequence. A byte-level BPE token can hold part of a multi-byte
UTF-8 character (an emoji is often two or three tokens); decoded alone it would be U+FFFD. Such a
token is shown as the character it belongs to and which part it is: "🙂[1/2]", "🙂[2/2]"."""
from __future__ import annotations

import re

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece byte fallback


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


def token_bytes(tokenizer, i: int) -> tuple[bytes, bool]:
    """(the UTF-8 bytes token `i` stands for, whether they are a whole text on their own)."""
    text = tokenizer.decode([i], skip_special_tokens=False)
    if "\ufffd" not in text:
        return text.encode("utf-8"), True
    piece = tokenizer.id_to_token(i) or ""
    m = _BYTE_TOKEN.match(piece)
    if m:
        return bytes([int(m.group(1), 16)]), False
    return bytes(_BYTE_DECODER.get(ch, ord("?")) for ch in piece), False


def isolated_strings(tokenizer, ids) -> list[str]:
    """Display text of unrelated tokens (a top-k list): a partial character's bytes as \\xNN."""
    out = []
    for i in ids:
        p, whole = token_bytes(tokenizer, int(i))
        out.append(p.decode("utf-8") if whole else "".join(f"\\x{x:02x}" for x in p))
    return out


def token_strings(tokenizer, ids) -> list[str]:
    """Display text of each token of a sequence; parts of a character labelled with the character."""
    pieces = [token_bytes(tokenizer, int(i)) for i in ids]
    out = [p.decode("utf-8", errors="replace") if whole else None for p, whole in pieces]
    if all(o is not None for o in out):
        return out
    stream = b"".join(p for p, _ in pieces)
    starts, pos = [], 0
    for p, _ in pieces:
        starts.append(pos)
        pos += len(p)
    chars = _char_spans(stream)                      # [(start, end, text)] of each decoded character
    for t, (p, whole) in enumerate(pieces):
        if whole:
            continue
        a, b = starts[t], starts[t] + len(p)
        covering = [c for c in chars if c[0] < b and c[1] > a] if b > a else []
        if not covering:
            out[t] = "".join(f"\\x{x:02x}" for x in p)
            continue
        label = "".join(c[2] for c in covering)
        lo, hi = covering[0][0], covering[-1][1]
        sharing = [u for u in range(len(pieces)) if starts[u] < hi and starts[u] + len(pieces[u][0]) > lo]
        out[t] = f"{label}[{sharing.index(t) + 1}/{len(sharing)}]"
    return out


def _char_spans(data: bytes) -> list[tuple[int, int, str]]:
    """Each character of a UTF-8 byte string with its byte span; an invalid byte shows as \\xNN."""
    spans, i = [], 0
    while i < len(data):
        for n in (1, 2, 3, 4):
            try:
                ch = data[i:i + n].decode("utf-8")
            except UnicodeDecodeError:
                continue
            spans.append((i, i + n, ch))
            i += n
            break
        else:
            spans.append((i, i + 1, f"\\x{data[i]:02x}"))
            i += 1
    return spans
