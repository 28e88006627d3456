"""The standalone report: a header, then the views top to bottom. Bokeh's JavaScript is inlined, so
the file opens offline; nothing in it is fetched on demand (no TeX, icons or map tiles)."""
from __future__ import annotations

import contextlib
import html
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.resources import INLINE
from bokeh.settings import settings

from ..errors import LensError
from ..files import output_path, write_atomic
from ..settings import DEFAULT_FACTORS, HEATMAP_CLUSTERS, HEATMAP_NEURONS
from .logit_lens import layer_predictions_view, rankings_view, ranks_in_text_view, watch_view
from ..analysis.neurons import neuron_heatmap
from .neurons import activations_view, factors_view
from .style import NOTE_STYLE, save_buttons_only, text_div
from .attention import head_view
from .causal import causal_factors_view, what_if_view
from .text import saliency_view


def header_view(expl):
    e = html.escape
    times = ", ".join(f"{k} {v:.2f}s" for k, v in expl.timings.items())
    warnings = "".join(f"<p style='color:#a05a00'>&#9888; {e(w)}</p>" for w in expl.warnings())
    chat = " (in the model's chat template)" if expl.settings.get("chat") else ""
    devices = ", ".join(f"{k} on {v}" for k, v in expl.devices.items())
    times = times + (f" ({devices})" if devices else "")
    family = f" <span style='{NOTE_STYLE}'>({e(expl.family)} family)</span>" if expl.family else ""
    # a long prompt (a page of a paper) scrolls in its own box instead of pushing the views pages down
    box = "display:block;max-height:9em;overflow-y:auto;border-left:3px solid #ddd;padding-left:6px"
    style = box if len(expl.prompt) > 600 else ""
    generated = (f"<b>Generated:</b> <span class='lens-text'>{e(expl.generated)}</span>" if expl.n_generated else
                 f"<b>Generated:</b> <span style='{NOTE_STYLE}'>nothing: the text itself is profiled "
                 f"(--max-new-tokens 0)</span>")
    return text_div(f"<h2>lens: {e(expl.model_name)}{family}</h2><p><b>Prompt{chat}:</b> <span class='lens-text' "
                    f"style='{style}'>{e(expl.prompt)}</span><br>{generated}</p>"
                    f"{warnings}<p style='{NOTE_STYLE}'>{e(times)}</p>", width=1200, name="header",
                    styles={"white-space": "pre-wrap"})


def report_layout(expl, factors: int | None = None, layers=None, include_first: bool = False,
                  heatmap_layer: int | None = None, heatmap_neurons: int = HEATMAP_NEURONS):
    """All views of one explanation. `factors=None` takes up to 5 factors (fewer for a short
    sequence); `layers` selects the layers factorised, and the heatmap shows the last of them
    unless `heatmap_layer` says otherwise (without either: the middle layer)."""
    from ..analysis.neurons import select_layers

    chosen = select_layers(expl.n_layers, layers) if layers is not None else None
    why = ("as asked" if heatmap_layer is not None else "the last of the layers factorised" if chosen else
           "the middle layer; --heatmap-layer picks another")
    heatmap_layer = heatmap_layer if heatmap_layer is not None else chosen[-1] if chosen else expl.n_layers // 2
    select_layers(expl.n_layers, heatmap_layer)
    n_factorised = expl.n_tokens - (0 if include_first else 1)
    k = min(DEFAULT_FACTORS, n_factorised) if factors is None else factors
    if k > n_factorised:
        raise LensError(f"{k} factors asked for, but {n_factorised} positions are factorised")
    # NMF (numpy's matrix products release the GIL) in a thread while the other views are built.
    with ThreadPoolExecutor(max_workers=1) as pool:
        nmf = pool.submit(expl.factors, k, layers=layers, include_first=include_first) if k else None
        parts = [header_view(expl), what_if_view(expl), saliency_view(expl), head_view(expl), ranks_in_text_view(expl),
                 rankings_view(expl), layer_predictions_view(expl)]
        if expl.watched:
            parts.append(watch_view(expl))
        heatmap = activations_view(expl, neuron_heatmap(expl.activations, heatmap_layer, heatmap_neurons,
                                                        HEATMAP_CLUSTERS), why)
        if nmf is not None:
            parts += [factors_view(expl, nmf.result()), causal_factors_view(expl, nmf.result())]
    parts.append(heatmap)
    return save_buttons_only(column(*parts, name="report"))


def report_html(expl, **kw) -> str:
    title = f"lens: {expl.model_name}: {expl.prompt[:60]}"
    layout = report_layout(expl, **kw)
    with _without_validation():
        return file_html(layout, resources=INLINE, title=title)


@contextlib.contextmanager
def _without_validation():
    """Skip Bokeh's document checks while a report is serialised: they walk every model again (~30 %
    of serialising) and only log; the tests run them on the report instead (no issue allowed)."""
    if not settings.perform_document_validation():
        yield
        return
    settings.perform_document_validation.set_value(False)
    try:
        yield
    finally:
        settings.perform_document_validation.unset_value()  # back to BOKEH_VALIDATE_DOC or the default


def save_report(expl, path, **kw) -> Path:
    """Write the report atomically (a partial file never replaces a good one)."""
    output_path(path, "report")  # a bad path fails before the report is built
    text = report_html(expl, **kw)
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"), "report")
