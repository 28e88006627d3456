"""Chat prompts for instruct models: the model's own chat template (recorded at export from its
tokenizer config or GGUF metadata), rendered the way transformers renders it: Jinja2 in a sandbox,
one user message, the assistant's turn opened."""
from __future__ import annotations

from .errors import LensError


def render(template: str | None, prompt: str, special_tokens: dict | None = None, model_name: str = "") -> str:
    if not template:
        raise LensError(f"{model_name or 'this model'} has no chat template (an instruct model exported by "
                        f"lens >= 0.2 records it); drop --chat")
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=[{"role": "user", "content": prompt}],
                                                add_generation_prompt=True, **(special_tokens or {}))
    except TemplateError as e:
        raise LensError(f"the chat template of {model_name or 'this model'} failed: {e}") from None
