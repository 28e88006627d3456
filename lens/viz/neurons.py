"""The neuron views: NMF factors of the MLP activations (sparklines that paint the text), and a
heatmap of a layer's most active neurons grouped by k-means cluster."""
from __future__ import annotations

import html

import numpy as np
from bokeh.events import MouseLeave
from bokeh.layouts import column, row
from bokeh.models import (ColorBar, ColumnDataSource, CustomJS, HoverTool, LinearColorMapper, RadioButtonGroup, Range1d,
                          TapTool)
from bokeh.palettes import Blues256, Category10_10
from bokeh.plotting import figure

from .style import (saveable, CHAR_W, EXCLUDED_COLOR, INPUT_COLOR, js, NOTE_STYLE, OUTPUT_COLOR, PROMPT_SHADE,
                    SPARK_BACKGROUND, drop_grids, label, plain, rgb, text_color, text_div)
from .text import draw_tokens, significant, text_figure, token_layout, token_source

HEAT_PALETTE = Blues256[::-1]    # zero is white: only positive activations are coloured


def factors_view(expl, factors, page_width: int = 1360):
    """Sparklines of each factor over the sequence (left); the text coloured by each token's dominant
    factor (right), tokens coloured as in the article (a generated token by the activations that
    produced it). Hovering a sparkline isolates its factor, leaving restores, tapping pins it."""
    k, n = factors.k, expl.n_tokens
    factorised = np.zeros(n, bool)
    factorised[factors.positions] = True
    tf = factors.token_factors / np.maximum(factors.token_factors[factorised].max(0, keepdims=True), 1e-12)
    shown = expl.by_token(tf)                                           # [n, k] per token, the article's rule
    shown_ok = expl.by_token(factorised)                                # [n] False: left out
    palette = [Category10_10[f % 10] for f in range(k)]
    # the text takes what the sparklines leave of the page
    lay = token_layout(expl.tokens, int((page_width - spark_width(n) - LABEL_W - 20) / CHAR_W))
    bases = [INPUT_COLOR if i < expl.n_prompt else OUTPUT_COLOR for i in range(n)]
    # two colourings a toggle switches between: the article's (a generated token by the position that
    # produced it) and each token's own position
    modes = {"article": _coloring(shown, shown_ok, palette, bases), "own": _coloring(tf, factorised, palette, bases)}
    src = token_source(expl, lay, "factor_tokens", **modes["article"],
                       color=modes["article"]["dom_color"], alpha=modes["article"]["dom_alpha"],
                       text_color=modes["article"]["dom_text"])
    for mode, columns in modes.items():
        src.data.update({f"{key}_{mode}": v for key, v in columns.items()})
    src.tags = [-1, 0]  # the pinned factor (-1: none), the colouring (0: the article's, 1: own position)
    p = text_figure(lay, name="factor_text")
    boxes = draw_tokens(p, src, overlay=dict(fill_color="color", fill_alpha="alpha", name="factor_boxes"))
    p.add_tools(HoverTool(tooltips=[("token", "@token"), ("dominant factor", "@factor")], renderers=[boxes]))
    saliency = expl.factor_saliency_for(factors)
    panel, paint = factor_saliency_panel(expl, saliency, palette, lay, src) if saliency is not None else (None, None)
    sparks, lines = sparklines(expl, factors, (shown, tf), (shown_ok, factorised), palette, src, paint)
    toggle = RadioButtonGroup(labels=["colour a generated token by the position that produced it (the article)",
                                      "by its own position"], active=0, name="factor_colouring")
    toggle.js_on_change("active", CustomJS(args=dict(src=src, lines=lines, toggle=toggle, palette=palette, k=k,
                                                     excluded=EXCLUDED_COLOR),
                                           code=js("colors", "factor_paint", "factor_mode")))
    layers = factors.layers
    where = f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"
    left_out = "".join(f" Greyed: token {pos} ({html.escape(label(expl.tokens[pos]))}), {html.escape(why)}; "
                       "--include-first factorises it too." for pos, why in factors.excluded.items())
    title = text_div(
        f"<b>Neuron activation factors</b>: {factors.method.upper()} of the MLP neurons of {where} into {k} factors "
        f"({factors.explained:.0%} of the activations of the positions factorised explained). Hover a sparkline to "
        f"isolate its factor, tap it to pin.<br><span style='{NOTE_STYLE}'>A prompt token is coloured by the "
        f"activations at its position; a generated token by the activations that produced it (the position before), "
        f"as in the article, so the last prompt token and the first generated token share a value. The shaded "
        f"part of each sparkline is the prompt.{left_out}</span>", width=1200)
    return column(title, toggle, row(sparks, p), *([panel] if panel is not None else []), name="factors_view")


def _coloring(values: np.ndarray, ok: np.ndarray, palette, bases) -> dict:
    """A token colouring of the factors view: each token's dominant factor, its strength, a readable text
    colour, and each factor's value (`act_F`); `ok` False: left out (greyed)."""
    n = len(values)
    dom = values.argmax(1)
    alpha = [float(0.15 + 0.75 * values[i, dom[i]]) if ok[i] else 1.0 for i in range(n)]
    color = [palette[d] if ok[i] else EXCLUDED_COLOR for i, d in enumerate(dom)]
    return dict(dom_color=color, dom_alpha=alpha,
                dom_text=[text_color(_blend(c, b, a)) for c, b, a in zip(color, bases, alpha)],
                factor=[int(d) + 1 if ok[i] else 0 for i, d in enumerate(dom)], ok=[bool(v) for v in ok],
                **{f"act_{f}": values[:, f].tolist() for f in range(values.shape[1])})


SPARK_ROW, LABEL_W = 56, 190   # px per factor row; px of the labels left of the lines


def spark_width(n_tokens: int) -> int:
    """Sparklines grow with the sequence: 8 px a token, 160 to 480 px."""
    return int(np.clip(8 * n_tokens, 160, 480))


def factor_saliency_panel(expl, saliency: np.ndarray, palette, lay, factor_src):
    """The article's "saliency of factors": a running text that a hovered sparkline point paints with
    the tokens that drive that factor there (`Explainer.factor_saliency`). Returns (the panel, the
    CustomJS the sparklines' hover calls with the hovered cell; its `cells` argument is set there)."""
    src = token_source(expl, lay, "factor_saliency_tokens", paint=[palette[0]] * expl.n_tokens)
    p = text_figure(lay, name="factor_saliency_text")
    draw_tokens(p, src, overlay=dict(fill_color="paint", fill_alpha="alpha", name="factor_saliency_boxes"))
    p.text("x", "y", text="pct", source=src, y_offset=20, text_align="center", text_baseline="middle",
           text_font_size="10px", text_color="#333333")
    details = text_div(f"<span style='{NOTE_STYLE}'>Hover a point of a factor's sparkline.</span>",
                       name="factor_saliency_details", width=1100)
    head = text_div("<b>Saliency of factors</b>: hover a point of a factor's sparkline to paint the tokens that drive "
                    f"the factor there (gradient &times; input of the factor's readout of the neurons at that position; "
                    f"shares sum to 100 %). <span style='{NOTE_STYLE}'>A generated token's point is the position "
                    f"before it, as the sparklines draw it (its own with the colouring switched).</span>", width=1200)
    paint = CustomJS(args=dict(src=src, mats=[[significant(r).tolist() for r in f] for f in saliency], palette=palette,
                               details=details, n_prompt=expl.n_prompt, input_rgb=rgb(INPUT_COLOR),
                               output_rgb=rgb(OUTPUT_COLOR), cells=None, factor_src=factor_src),
                     code=js("colors", "factor_saliency"))
    return column(head, details, p, name="factor_saliency_view"), paint


def sparklines(expl, factors, values, oks, palette, src, saliency_paint=None):
    """One figure, one row per factor: its name, neuron count and top neurons (layer.neuron) drawn
    left of a line of its value over the sequence. Every factor in one figure: each Bokeh figure
    costs ~30 models to build and serialise. `values` and `oks`: the article's colouring's [n, k]
    values and [n] kept flags, then the own-position one's (the lines switch with the toggle).
    `saliency_paint` (a CustomJS) also runs on a hovered point. Returns (figure, the lines' source)."""
    (shown, own), (shown_ok, own_ok) = values, oks
    k, n = factors.k, expl.n_tokens
    width = spark_width(n)
    unit = width / n                                                    # px per position
    x0 = -LABEL_W / unit - 0.5                                          # labels sit left of position 0
    p = figure(frame_width=width + LABEL_W, frame_height=SPARK_ROW * k, tools="", toolbar_location=None,
               x_range=Range1d(x0, n - 0.5), y_range=Range1d(k, 0), min_border=2, name="sparklines",
               x_axis_type=None, y_axis_type=None)
    p.outline_line_color = None
    saveable(p, "factor_sparklines")
    p.quad(left=-0.5, right=n - 0.5, bottom=[f + 0.95 for f in range(k)], top=[f + 0.05 for f in range(k)],
           fill_color=SPARK_BACKGROUND, line_color=None)
    p.quad(left=-0.5, right=expl.n_prompt - 0.5, bottom=k, top=0, fill_color=PROMPT_SHADE, fill_alpha=0.04,
           line_color=None)
    total = factors.loadings.shape[1]
    line = lambda v, ok, f: np.where(ok, f + 0.9 - 0.8 * v[:, f], np.nan).tolist()
    lines = ColumnDataSource(dict(xs=[list(range(n))] * k, ys=[line(shown, shown_ok, f) for f in range(k)],
                                  ys_article=[line(shown, shown_ok, f) for f in range(k)],
                                  ys_own=[line(own, own_ok, f) for f in range(k)], color=palette),
                             name="sparkline_lines")
    p.multi_line("xs", "ys", source=lines, color="color", line_width=2)
    texts, ty, colors, sizes, styles = [], [], [], [], []
    for f in range(k):
        n_on = factors.n_neurons(f)
        top = ", ".join(f"{l}.{i}" for l, i, _ in factors.top_neurons(f, 3))
        texts += [f"factor {f + 1}", f"{n_on:,} neurons ({n_on / total:.0%})", f"top: {top}"]
        ty += [f + 0.22, f + 0.5, f + 0.78]
        colors += [palette[f], "#555555", "#555555"]
        sizes += ["12px", "11px", "11px"]
        styles += ["bold", "normal", "normal"]
    p.text(x=[x0 + 0.3] * len(texts), y=ty, text=texts, text_color=colors, text_font_size=sizes,
           text_font_style=styles, text_baseline="middle", name="sparkline_labels")
    fs, xs = np.meshgrid(np.arange(k), np.arange(n), indexing="ij")
    cells = ColumnDataSource(dict(x=xs.ravel(), y=fs.ravel() + 0.5, factor=fs.ravel(), label=fs.ravel() + 1,
                                  token=[expl.tokens[i] for i in xs.ravel()]), name="sparkline_cells")
    hits = p.rect("x", "y", 1, 1, source=cells, fill_alpha=0, line_alpha=0)
    hits.selection_glyph = hits.nonselection_glyph = None
    # the tooltip to the right of the point: on its left it covered the factors' labels
    p.add_tools(HoverTool(tooltips=[("factor", "@label"), ("token", "@token")], renderers=[hits], attachment="right",
                          callback=_factor_js(src, palette, cells, "hover")), TapTool(renderers=[hits]))
    if saliency_paint is not None:
        saliency_paint.args["cells"] = cells
        p.add_tools(HoverTool(tooltips=None, renderers=[hits], callback=saliency_paint))
    p.js_on_event(MouseLeave, _factor_js(src, palette, cells, "leave"))
    cells.selected.js_on_change("indices", _factor_js(src, palette, cells, "tap"))
    return p, lines


def _factor_js(src, palette, cells, action: str) -> CustomJS:
    """Hovering a factor's row paints that factor on the text; leaving restores (the pinned factor,
    else each token's dominant one); a tap pins the factor (a tap on the pinned one unpins it)."""
    return CustomJS(args=dict(src=src, palette=palette, cells=cells, action=action, excluded=EXCLUDED_COLOR),
                    code=js("colors", "factor_paint", "factors"))


def _blend(top: str, bottom: str, alpha: float) -> tuple:
    return tuple(alpha * t + (1 - alpha) * b for t, b in zip(rgb(top), rgb(bottom)))


def activations_view(expl, heat, why: str = ""):
    """The heatmap (`analysis.neurons.Heatmap`): the most active neurons of a layer (rows) over every
    token (columns), grouped into bands by k-means cluster; zero is white, only positive activations
    are coloured (the article's figure). `why`: how the layer was chosen, for the title."""
    layer, order, cluster_of, img, high = heat.layer, heat.neurons, heat.clusters, heat.values, heat.high
    n, n_neurons, d_mlp, clusters = expl.n_tokens, len(order), expl.activations.shape[2], heat.n_clusters
    rows, cols = np.meshgrid(np.arange(n_neurons), np.arange(n), indexing="ij")
    names = [f"{layer}.{int(i)}" for i in order]
    src = ColumnDataSource(dict(
        x=cols.ravel(), y=rows.ravel() + 0.5, value=img.ravel().round(4), neuron=[names[r] for r in rows.ravel()],
        cluster=cluster_of[rows.ravel()] + 1, token=[expl.tokens[t] for t in cols.ravel()], position=cols.ravel()),
        name="heatmap_cells")
    mapper = LinearColorMapper(palette=HEAT_PALETTE, low=0, high=high, high_color=HEAT_PALETTE[-1])
    cell_w = int(np.clip(1100 // max(n, 1), 14, 40))
    cell_h = int(np.clip(640 // n_neurons, 5, 14))
    stripe = 0.6                                                        # columns of the clusters' colour key
    p = figure(frame_width=int(cell_w * (n + stripe)), frame_height=cell_h * n_neurons, tools="", toolbar_location=None,
               x_range=Range1d(-0.5 - stripe, n - 0.5), y_range=Range1d(n_neurons, 0), x_axis_location="above",
               title=f"Layer {layer}{f' ({why})' if why else ''}: the {n_neurons} most active of {d_mlp} MLP neurons, in "
                     f"{clusters} k-means clusters (bands, each keyed by a colour on the left)", name="activations")
    p.rect("x", "y", 1, 1, source=src, fill_color={"field": "value", "transform": mapper}, line_color=None)
    saveable(p, "activations")
    bounds = [i for i in range(1, n_neurons) if cluster_of[i] != cluster_of[i - 1]]
    p.segment(x0=[-0.5] * len(bounds), x1=[n - 0.5] * len(bounds), y0=bounds, y1=bounds, line_color="#444444",
              line_width=1.5, name="cluster_boundaries")
    starts = [0] + bounds
    ends = bounds + [n_neurons]
    # each band keyed by its cluster's colour, left of the cells (the colour bar stays the activation's)
    p.quad(left=-0.5 - stripe, right=-0.55, top=starts, bottom=ends, line_color=None, name="cluster_key",
           fill_color=[Category10_10[int(cluster_of[a]) % 10] for a in starts])
    p.yaxis.ticker = [(a + b) / 2 for a, b in zip(starts, ends)]
    p.yaxis.major_label_overrides = {(a + b) / 2: f"cluster {int(cluster_of[a]) + 1}" for a, b in zip(starts, ends)}
    p.yaxis.major_tick_line_color = None
    p.xaxis.ticker = list(range(n))
    p.xaxis.major_label_overrides = {i: plain(label(t)) for i, t in enumerate(expl.tokens)}
    p.xaxis.major_label_orientation = "vertical"
    drop_grids(p)
    p.add_tools(HoverTool(tooltips=[("neuron (layer.index)", "@neuron"), ("cluster", "@cluster"),
                                    ("token", "@token (position @position)"), ("activation", "@value{0.000}")]))
    p.title.text_font_size = "13px"
    p.add_layout(ColorBar(color_mapper=mapper, title="activation", width=12), "right")
    return p
