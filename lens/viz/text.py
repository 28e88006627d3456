"""Running text of token boxes, and the article's first interface on it: input saliency.

Token text is drawn by canvas `text` glyphs and the details of a token go into a fixed panel as
escaped text, never as HTML, so a token like `</script><img onerror=...>` is displayed, not run.
Interaction is CustomJS working on data shipped in the document: no server, no network."""
from __future__ import annotations

import html

import numpy as np
from bokeh.core.properties import value
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, CustomJS, HoverTool, Range1d, Select, TapTool
from bokeh.plotting import figure

from .style import (saveable, CHAR_W, INPUT_COLOR, INPUT_EDGE, js, NOTE_STYLE, OUTPUT_COLOR, OUTPUT_EDGE,
                    SALIENCY_COLOR, display, rgb, text_div)

LINE_H = 50           # px per line: a 24 px box, its percentage label below it, a gap
BOX_H = 24
LABEL_DY = 20         # px from a box's centre down to its label's centre
LABEL_FONT = "10px"   # monospace: "100%" is 4 x ~6 px, inside the narrowest box
MIN_CHARS = 4         # boxes are at least this many characters wide, so labels never overlap
GAP_CHARS = 0.4
PAD = 4


def token_layout(tokens: list[str], width_chars: int = 120, line_h: int = LINE_H, min_chars: int = MIN_CHARS) -> dict:
    """Running-text positions in px: tokens left to right, wrapped at `width_chars`, a line break
    after a token holding a newline, lines `line_h` apart. Returns x (centre), y (line centre,
    downwards), w (box width), lines, line_h."""
    xs, ys, ws = [], [], []
    col, line = 0.0, 0
    for tok in tokens:
        n = max(len(display(tok)), min_chars)
        if col and col + n > width_chars:
            col, line = 0.0, line + 1
        xs.append((col + n / 2) * CHAR_W)
        ys.append(-line * line_h)
        ws.append(n * CHAR_W)
        col += n + GAP_CHARS
        if "\n" in tok:
            col, line = 0.0, line + 1
    return {"x": xs, "y": ys, "w": ws, "lines": line + 1, "line_h": line_h}


def text_figure(lay: dict, **kw):
    """A figure whose data units are screen pixels (frame sized to the ranges), axes and tools off."""
    width = int(max(max(x + w / 2 for x, w in zip(lay["x"], lay["w"])) + 2 * PAD, 300))
    line_h = lay.get("line_h", LINE_H)
    height = int(lay["lines"] * line_h)
    top = BOX_H / 2 + PAD  # the first line's box, and the rest of each line below its box
    p = figure(frame_width=width, frame_height=height, x_range=Range1d(-PAD, width - PAD),
               y_range=Range1d(-height + top, top), tools="", toolbar_location=None,
               min_border=0, x_axis_type=None, y_axis_type=None, **kw)  # no axes or grids: fewer models
    p.outline_line_color = None
    return saveable(p, kw.get("name", "text"))


def token_source(expl, lay, name: str, **extra) -> ColumnDataSource:
    n = expl.n_tokens
    kind = ["input"] * expl.n_prompt + ["output"] * (n - expl.n_prompt)
    data = dict(x=lay["x"], y=lay["y"], w=lay["w"], text=[display(t) for t in expl.tokens], token=list(expl.tokens),
                kind=kind, index=list(range(n)), base=[INPUT_COLOR if k == "input" else OUTPUT_COLOR for k in kind],
                line=[INPUT_EDGE if k == "input" else OUTPUT_EDGE for k in kind], alpha=[0.0] * n, pct=[""] * n,
                text_color=["#000000"] * n, line_width=[1.0] * n)
    data.update(extra)
    return ColumnDataSource(data, name=name)


def draw_tokens(p, src, fill="base", fill_alpha=1.0, overlay=None):
    """Boxes (and an optional painted overlay), then the token text. Returns the box renderer."""
    boxes = p.rect("x", "y", "w", BOX_H, source=src, fill_color=fill, fill_alpha=fill_alpha, line_color="line",
                   line_width="line_width", name="token_boxes")
    boxes.selection_glyph = boxes.nonselection_glyph = None  # a tapped token changes no other box
    if overlay:
        p.rect("x", "y", "w", BOX_H, source=src, line_color=None, **overlay)
    p.text("x", "y", text="text", source=src, text_align="center", text_baseline="middle",
           text_font=value("monospace"), text_font_size="14px", text_color="text_color")
    return boxes


def saliency_view(expl, method: str | None = None, width_chars: int = 120):
    """Running text; hovering or tapping a generated token paints the earlier tokens by how much
    each contributed to it, with the percentage under each; a fixed panel names the token, its
    probability and its top contributors."""
    methods = list(expl.attributions)
    if not methods:
        why = ("no attribution method was asked for" if expl.n_generated else
               "no token was generated: the text is profiled (logit lens, factors), and attributions explain "
               "generated tokens")
        return text_div(f"<p><b>Input saliency</b>: {why}.</p>", name="saliency_view")
    method = method or methods[0]
    lay = token_layout(expl.tokens, width_chars)
    src = token_source(expl, lay, "saliency_tokens")
    p = text_figure(lay, name="saliency")
    boxes = draw_tokens(p, src, overlay=dict(fill_color=SALIENCY_COLOR, fill_alpha="alpha", name="saliency_boxes"))
    p.text("x", "y", text="pct", source=src, y_offset=LABEL_DY, text_align="center", text_baseline="middle",
           text_font=value("monospace"), text_font_size=LABEL_FONT, text_color="#333333", name="percent_labels")
    select = Select(title="attribution method", value=method, options=methods, name="method_select",
                    visible=len(methods) > 1)
    heading = text_div(_heading(method), name="saliency_title")
    details = text_div("<span style='color:#777'>Hover or tap a generated (yellow) token.</span>",
                       name="saliency_details", height=40, width=1100)
    paint = CustomJS(args=dict(src=src, mats={m: significant(a).tolist() for m, a in expl.attributions.items()},
                               sinks=expl.sink_methods(), held=_held_first(methods),
                               probs=[float(v) for v in expl.probabilities],
                               select=select, details=details,
                               heading=heading, n_prompt=expl.n_prompt, input_rgb=rgb(INPUT_COLOR),
                               output_rgb=rgb(OUTPUT_COLOR), paint_rgb=rgb(SALIENCY_COLOR),
                               heading_html=_heading("METHOD")),
                     code=js("colors", "saliency"))
    p.add_tools(HoverTool(tooltips=None, callback=paint, renderers=[boxes]), TapTool(renderers=[boxes]))
    src.selected.js_on_change("indices", paint)
    select.js_on_change("value", paint)
    parts = [heading, select, details, p]
    if expl.aopc:
        parts.insert(2, faithfulness_view(expl.aopc))
    sink = (" A method that puts most of every row on the first position (the attention sink: attention "
            "rollout compounds it over the layers) leaves it unpainted and scales the colours over the "
            "others; its percentage is still written." if expl.sink_methods() else "")
    legend = text_div(f"<span style='{NOTE_STYLE}'>Grey boxes: the prompt; yellow: generated tokens. Percentages are "
                      f"each earlier token's share of the attribution.{sink}</span>")
    return column(*parts, legend, name="saliency_view")


def _held_first(methods: list[str]) -> list[str]:
    """The methods whose path holds the first position fixed (integrated gradients): it has no attribution."""
    from .. import methods as M

    return [m for m in methods if m in M.REGISTRY and M.REGISTRY[m].path_integral]


def significant(a: np.ndarray, digits: int = 6) -> np.ndarray:
    """`a` rounded to `digits` significant digits (a short JSON that keeps small shares: attention
    rollout leaves ~3e-6 to every position but the sink, which rounding to decimals erased)."""
    a = np.asarray(a, np.float64)
    scale = 10.0 ** (np.floor(np.log10(np.where(a == 0, 1, np.abs(a)))) - (digits - 1))
    return np.round(a / scale) * scale


def faithfulness_view(f: dict):
    """Which method the model's behaviour supports: AOPC when removing the most relevant positions
    first (higher: the ranking found what mattered) and the least relevant first (lower is better)."""
    from ..analysis.faithfulness import beats_random, no_method_note

    good = set(beats_random(f))
    mark = lambda m: "" if m == "random" else " ✓ beats random" if m in good else " ✗ not better than random"  # noqa: E731
    rows = "".join(f"<tr><td>{html.escape(str(m))}{mark(m)}</td><td>{float(v['aopc_morf']):.3f}</td>"
                   f"<td>{float(v['aopc_lerf']):.3f}</td></tr>" for m, v in f.items() if isinstance(v, dict))
    note = no_method_note(f)
    warning = f"<p style='color:#a05a00'>&#9888; {html.escape(note)}</p>" if note else ""
    return text_div(f"{warning}<span style='{NOTE_STYLE}'>Faithfulness (mean drop of p(token) as 10-90% of the earlier "
                    f"tokens are masked out, by the method's ranking): </span><table style='font-size:12px'>"
                    f"<tr><th>ranking</th><th>most relevant first (higher is better)</th><th>least relevant first "
                    f"(lower is better)</th></tr>{rows}</table>", name="faithfulness")


def _heading(method: str) -> str:
    return (f"<b>Input saliency</b> ({html.escape(method)}): hover or tap a generated token to paint the "
            f"tokens that produced it")

