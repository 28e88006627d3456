"""The corpus report: pick a neuron or a factor and read its strongest contexts over the whole
corpus, each context's tokens painted by how strongly the unit fires there (the article's token
colouring, for a corpus), the firing token outlined. Token text is drawn by canvas glyphs and menu
labels are plain text: nothing from the corpus is ever interpreted as HTML or TeX."""
from __future__ import annotations

import html

import numpy as np
from bokeh.core.properties import value
from bokeh.embed import file_html
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, CustomJS, Range1d, Select
from bokeh.plotting import figure
from bokeh.resources import INLINE

from ..files import write_atomic
from .style import CHAR_W, INPUT_COLOR, INPUT_EDGE, NOTE_STYLE, SALIENCY_COLOR, display, js, rgb, text_color, text_div

ROW_H = 30
BOX_H = 22
MAX_CHARS = 14       # a token's box shows at most this many characters
VALUE_CHARS = 10     # the value column on the left
FIRING_EDGE = "#000000"


def corpus_report(path, model: str, examples_path, top, layers, d_mlp: int, windows: dict, factor_top,
                  factor_windows: dict, loadings, settings) -> None:
    import pyarrow.parquet as pq

    t = pq.read_table(examples_path, columns=["example", "tokens", "n_prompt"])
    tokens = dict(zip(t.column("example").to_pylist(), t.column("tokens").to_pylist()))
    n_prompt = dict(zip(t.column("example").to_pylist(), t.column("n_prompt").to_pylist()))
    items = {}
    if factor_top is not None:
        h = loadings
        for f in range(factor_top.values.shape[0]):
            tops = np.argsort(-h[f])[:3]
            name = f"factor {f}: top neurons " + ", ".join(f"L{layers[u // d_mlp]}.{u % d_mlp}" for u in tops)
            items[name] = _contexts(f, factor_top, factor_windows, tokens, n_prompt)
    units = sorted({u for u, _, _ in windows})
    for u in units:
        name = f"neuron L{layers[u // d_mlp]}.{u % d_mlp} (top {top.values[u, 0]:.3g})"
        items[name] = _contexts(u, top, windows, tokens, n_prompt)
    layout = column(_header(model, tokens, n_prompt, settings, layers, len(units), factor_top is not None),
                    _browser(items), _layer_summary(top, layers, d_mlp), name="corpus_report")
    text = file_html(layout, resources=INLINE, title=f"lens corpus: {model}")
    write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"), "report")


def _contexts(unit: int, top, windows: dict, tokens: dict, n_prompt: dict) -> dict:
    """Box data for one unit's top contexts, one row each, strongest first."""
    d = {k: [] for k in ("x", "y", "w", "text", "fill", "text_color", "line_color", "line_width", "token", "value",
                         "where")}
    peak = max(float(top.values[unit, 0]), 1e-12)
    shown = set()  # one row per example: its strongest position (the parquet keeps every token)
    for e, p, v in zip(top.examples[unit], top.positions[unit], top.values[unit]):
        if e < 0 or e in shown or (unit, int(e), int(p)) not in windows:
            continue
        r = len(shown)
        shown.add(e)
        lo, vals = windows[unit, int(e), int(p)]
        col = VALUE_CHARS
        y = -r * ROW_H
        _box(d, f"{float(v):.3g}", (VALUE_CHARS - 1) / 2, VALUE_CHARS - 1, y, INPUT_COLOR, "", float(v),
             f"rank {r + 1}, example {int(e)}, position {int(p)}", 0)
        for j, a in enumerate(vals):
            pos = lo + j
            tok = tokens[int(e)][pos]
            n = min(max(len(display(tok)), 2), MAX_CHARS)
            alpha = float(np.clip(a / peak, 0, 1))
            fill = tuple(int(round(alpha * c + (1 - alpha) * b)) for c, b in zip(rgb(SALIENCY_COLOR), rgb(INPUT_COLOR)))
            where = f"example {int(e)}, position {pos}" + (" (generated)" if pos >= n_prompt[int(e)] else "")
            _box(d, _cut(display(tok)), col + n / 2, n, y, "#{:02x}{:02x}{:02x}".format(*fill), tok, float(a), where,
                 3 if pos == p else 1)
            col += n + 0.3
    return d


def _box(d, text, x_chars, w_chars, y, fill, token, v, where, line_width):
    """One token box; the firing token (line_width 3) gets a dark outline."""
    d["x"].append(x_chars * CHAR_W)
    d["y"].append(y)
    d["w"].append(w_chars * CHAR_W)
    d["text"].append(text)
    d["fill"].append(fill)
    d["text_color"].append(text_color(fill))
    d["line_width"].append(line_width)
    d["line_color"].append(FIRING_EDGE if line_width > 1 else INPUT_EDGE)
    d["token"].append(token)
    d["value"].append(round(v, 4))
    d["where"].append(where)


def _cut(s: str) -> str:
    return s if len(s) <= MAX_CHARS else s[:MAX_CHARS - 1] + "…"


def _browser(items: dict):
    if not items:
        return text_div("<p>No neuron or factor to show.</p>")
    names = list(items)
    rows = max(1, max(len(set(d["y"])) for d in items.values()))
    width = int(max(max((x + w / 2 for x, w in zip(d["x"], d["w"])), default=300) for d in items.values()) + 20)
    src = ColumnDataSource(dict(items[names[0]]), name="corpus_contexts")
    p = figure(frame_width=min(width, 1360), frame_height=rows * ROW_H, x_range=Range1d(-4, min(width, 1360) - 4),
               y_range=Range1d(-rows * ROW_H + ROW_H / 2, ROW_H / 2), tools="hover", toolbar_location=None,
               min_border=0, name="corpus_contexts_plot",
               tooltips=[("token", "@token"), ("activation", "@value"), ("", "@where")],
               x_axis_type=None, y_axis_type=None)
    p.outline_line_color = None
    p.rect("x", "y", "w", BOX_H, source=src, fill_color="fill", line_color="line_color", line_width="line_width")
    p.text("x", "y", text="text", source=src, text_align="center", text_baseline="middle",
           text_font=value("monospace"), text_font_size="13px", text_color="text_color")
    select = Select(title="neuron or factor", value=names[0], options=names, name="unit_select")
    select.js_on_change("value", CustomJS(args=dict(src=src, items=items), code=js("unit_select")))
    note = text_div(f"<span style='{NOTE_STYLE}'>Each row: one of the unit's strongest contexts over the corpus "
                    f"(one per prompt), its value on the left; tokens painted by the unit's activation there, "
                    f"relative to its strongest; the firing token outlined in black. Hover a token for its value."
                    f"</span>")
    return column(select, note, p, name="corpus_browser")


def _header(model, tokens, n_prompt, settings, layers, n_neurons, has_factors):
    e = html.escape
    n_tokens = sum(len(t) for t in tokens.values())
    generated = sum(len(t) - n_prompt[x] for x, t in tokens.items())
    what = (f"{len(tokens)} prompts, {n_tokens} tokens ({generated} generated)" if generated else
            f"{len(tokens)} prompts, {n_tokens} tokens (profiled as written, nothing generated)")
    return text_div(
        f"<h2>lens corpus: {e(model)}</h2><p>{e(what)}; layers {layers[0]}-{layers[-1]}; top {settings.top_k} "
        f"contexts per unit{'' if settings.include_first else ', first positions left out'}.</p>"
        f"<p style='{NOTE_STYLE}'>The menu offers {n_neurons} neurons (each layer's strongest"
        f"{' and each factor&#39;s top-loading ones' if has_factors else ''})"
        f"{' and the NMF factors' if has_factors else ''}. Every neuron's top contexts are in "
        f"top_activations.parquet.</p>", width=1200, name="corpus_header")


def _layer_summary(top, layers, d_mlp):
    """Per layer: its strongest neuron's top activation, and the median neuron's."""
    v = np.where(np.isfinite(top.values[:, 0]), top.values[:, 0], np.nan).reshape(len(layers), d_mlp)
    peak, median = np.nanmax(v, 1), np.nanmedian(v, 1)
    floor = max(float(np.nanmin(np.where(median > 0, median, np.nan))) / 2, 1e-3) if np.any(median > 0) else 1e-3
    src = ColumnDataSource(dict(layer=[str(l) for l in layers], peak=np.maximum(peak, floor).tolist(),
                                median=np.maximum(median, floor).tolist()))
    p = figure(x_range=[str(l) for l in layers], height=240, width=900, toolbar_location=None, tools="hover",
               y_axis_type="log",  # attention-sink neurons fire ~100x harder than the rest
               title="strongest activation per layer: the layer's strongest neuron (bar), its median neuron (dot)",
               tooltips=[("layer", "@layer"), ("strongest", "@peak"), ("median", "@median")], name="layer_summary")
    p.vbar(x="layer", top="peak", bottom=floor, width=0.7, source=src, color="#c6dbef")
    p.scatter(x="layer", y="median", source=src, size=6, color=SALIENCY_COLOR)
    p.xaxis.axis_label = "layer"
    p.yaxis.axis_label = "top-1 activation"
    return p

