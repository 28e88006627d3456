"""The standalone report: a header, then the views. Bokeh's JavaScript is inlined, so the file opens
offline; nothing in it is fetched on demand (no TeX labels, icons or map tiles)."""
from __future__ import annotations

import html
import os
from pathlib import Path

from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.resources import INLINE

from ..errors import LensError
from ..settings import DEFAULT_FACTORS
from .views import activations_view, factors_view, rankings_view, saliency_view, text_div, watch_view


def report_layout(expl, factors: int | None = None, layers=None, activation_layer: int | None = None,
                  detailed: bool = True):
    """All views of one explanation, arranged top to bottom. `factors=None` takes up to 5 factors
    (fewer for a shorter sequence); a number asked for explicitly must fit the tokens."""
    e = html.escape
    prompt = "".join(expl.tokens[:expl.n_prompt])
    generated = "".join(expl.tokens[expl.n_prompt:])
    times = ", ".join(f"{k} {v:.2f}s" for k, v in expl.timings.items())
    warnings = "".join(f"<p style='color:#a05a00'>&#9888; {e(w)}</p>" for w in expl.warnings())
    header = text_div(f"<h2>lens: {e(expl.model_name)}</h2><p><b>Prompt:</b> {e(prompt)}<br>"
                      f"<b>Generated:</b> {e(generated)}</p>{warnings}<p style='color:#777'>{e(times)}</p>",
                      width=900, name="header")
    parts = [header, saliency_view(expl, detailed=detailed), rankings_view(expl)]
    if expl.watched:
        parts.append(watch_view(expl))
    k = min(DEFAULT_FACTORS, expl.n_tokens) if factors is None else factors
    if k:
        parts.append(factors_view(expl, expl.factors(k, layers=layers)))
    layer = expl.n_layers // 2 if activation_layer is None else activation_layer
    parts.append(activations_view(expl, layer))
    return column(*parts, name="report")


def report_html(expl, **kw) -> str:
    title = f"lens: {expl.model_name}: {''.join(expl.tokens[:expl.n_prompt])[:60]}"
    return file_html(report_layout(expl, **kw), resources=INLINE, title=title)


def save_report(expl, path, **kw) -> Path:
    """Write the report atomically (a partial file never replaces a good one)."""
    path = Path(path)
    text = report_html(expl, **kw)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise LensError(f"cannot write {path}: {e.strerror}") from None
    return path
