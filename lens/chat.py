"""Chat prompts for instruct models: the model's own chat template (recorded at export from its
tokenizer config or GGUF metadata), rendered the way transformers renders it: Jinja2 in a sandbox,
one user message, the assistant's turn opened. A model folder is untrusted input, so rendering is
bounded in steps and in the size of what `*` and `**` build (a real template runs a few dozen
lines per message)."""
from __future__ import annotations

import sys

from .errors import LensError

MAX_STEPS = 1_000_000      # lines of the compiled template run (a loop 10^10 times long is refused)
MAX_SIZE = 1_000_000       # items or characters `*` may build, digits `**` may build


def render(template: str | None, prompt: str, special_tokens: dict | None = None, model_name: str = "") -> str:
    if not template:
        raise LensError(f"{model_name or 'this model'} has no chat template (an instruct model exported by "
                        f"lens >= 0.2 records it); drop --chat")
    from jinja2 import TemplateError

    def raise_exception(message):
        raise TemplateError(message)

    env = _bounded_environment()
    env.globals["raise_exception"] = raise_exception
    who = model_name or "this model"
    try:
        compiled = env.from_string(template)
        with _step_budget(MAX_STEPS):
            return compiled.render(messages=[{"role": "user", "content": prompt}], add_generation_prompt=True,
                                   **(special_tokens or {}))
    except _TooLong:
        raise LensError(f"the chat template of {who} runs more than {MAX_STEPS:,} steps; it is refused") from None
    except (TemplateError, OverflowError, MemoryError, RecursionError, TypeError, ValueError) as e:
        raise LensError(f"the chat template of {who} failed: {str(e)[:200]}") from None


def _bounded_environment():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_SIZE:
                        raise OverflowError(f"'*' would build {len(seq) * n:,} items")
            if operator == "**" and isinstance(left, int) and isinstance(right, int) \
                    and abs(left) > 1 and right * max(abs(left), 2).bit_length() > MAX_SIZE:
                raise OverflowError("'**' would build too large a number")
            return super().call_binop(context, operator, left, right)

    return Bounded(trim_blocks=True, lstrip_blocks=True)


class _TooLong(Exception):
    pass


class _step_budget:
    """Count the lines the compiled template runs (its frames only) and stop it past `limit`."""

    def __init__(self, limit: int):
        self.left = limit

    def _local(self, frame, event, arg):
        if event == "line":
            self.left -= 1
            if self.left < 0:
                raise _TooLong
        return self._local

    def _global(self, frame, event, arg):
        return self._local if frame.f_code.co_filename == "<template>" else None

    def __enter__(self):
        self._old = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc):
        sys.settrace(self._old)
        return False
