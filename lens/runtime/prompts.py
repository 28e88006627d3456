"""Prompts and tokens: text or ids checked and encoded with the model's BOS policy, chat templates,
and display strings (`lens.tokens`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import tokens
from ..errors import LensError


class Prompts:
    """The token side of a `Model` (needs `tokenizer`, `add_bos`, `bos_token_id`, `d_vocab`, `n_ctx`,
    `_special_ids`, `manifest`, `name`)."""
    tokenizer: Any
    add_bos: bool
    bos_token_id: int | None
    d_vocab: int
    n_ctx: int
    name: str
    manifest: dict
    _special_ids: set

    def encode(self, text: str, bos: bool | None = None) -> list[int]:
        """Token ids of a prompt; the BOS token first when the model's policy (or `bos`) says so."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if (self.add_bos if bos is None else bos) and ids:
            ids = [self.bos_token_id] + ids
        return ids

    def prompt_ids(self, prompt) -> list[int]:
        """Token ids of a prompt given as text or as token ids, checked: text must be valid Unicode
        without NUL characters and hold more than special tokens; ids must be in the vocabulary."""
        if isinstance(prompt, str):
            try:
                prompt.encode("utf-8")
            except UnicodeEncodeError:
                raise LensError("the prompt is not valid text (it holds unpaired surrogates: invalid UTF-8 "
                                "bytes?)") from None
            if "\x00" in prompt:
                raise LensError("the prompt holds a NUL character")
            ids = self.encode(prompt)
            if ids and all(i in self._special_ids for i in ids):
                raise LensError(f"the prompt is only special tokens ({self.isolated_strings(ids)}); give some text")
            return ids
        if isinstance(prompt, (bytes, bytearray)) or not hasattr(prompt, "__iter__"):
            raise LensError(f"the prompt must be text or a list of token ids, not {type(prompt).__name__}")
        ids = list(prompt)
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            raise LensError("token ids must be integers")
        if any(not 0 <= int(i) < self.d_vocab for i in ids):
            raise LensError(f"token ids must be in 0..{self.d_vocab - 1}")
        return [int(i) for i in ids]

    def chat_prompt(self, text: str) -> str:
        """`text` as one user turn of the model's chat template, the assistant's turn opened."""
        from ..chat import render
        return render(self.manifest.get("chat_template"), text, self.manifest.get("special_tokens"), self.name)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_id(self, token: str) -> int:
        """The id of one token given as text (e.g. ' is'); an error if it is several tokens."""
        ids = self.encode(token, bos=False)
        if len(ids) != 1:
            raise LensError(f"{token!r} is {len(ids)} tokens for this model, not one: "
                            f"{self.isolated_strings(ids)}")
        return ids[0]

    def token_strings(self, ids) -> list[str]:
        """Display text of each token of a sequence; a token holding part of a multi-byte character
        is shown as that character and its part, e.g. "🙂[1/2]" (see `lens.tokens`)."""
        return tokens.token_strings(self.tokenizer, ids)

    def isolated_strings(self, ids) -> list[str]:
        """Display text of unrelated tokens (e.g. a top-k list); partial characters as \\xNN bytes."""
        return tokens.isolated_strings(self.tokenizer, ids)

    def check_length(self, n_prompt: int, max_new_tokens: int) -> None:
        if n_prompt == 0:
            raise LensError("the prompt is empty")
        if max_new_tokens < 0:
            raise LensError("max_new_tokens must be >= 0")
        if n_prompt + max_new_tokens > self.n_ctx:
            raise LensError(f"prompt ({n_prompt} tokens) + {max_new_tokens} new tokens exceeds the "
                            f"model's context of {self.n_ctx} tokens")
