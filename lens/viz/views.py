"""The article's interfaces as Bokeh layouts.

Token text is drawn by canvas `text` glyphs and shown in tooltips as plain fields, never as HTML, so
a token like `</script><img onerror=...>` is displayed, not run. Interaction is CustomJS working on
data shipped in the document: the file needs no server and no network.
"""
from __future__ import annotations

import html

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import (BasicTicker, ColorBar, ColumnDataSource, CustomJS, Div, HoverTool,
                          LinearColorMapper, LogColorMapper, Range1d, Select, TapTool)
from bokeh.core.properties import value
from bokeh.palettes import Category10_10, Viridis256
from bokeh.plotting import figure

CHAR_W, LINE_H, PAD = 8.4, 34, 4   # px per character of the 14px monospace text, px per line
INPUT_COLOR, OUTPUT_COLOR = "#f0f0f0", "#fff4d6"          # token boxes: prompt, generated
INPUT_EDGE, OUTPUT_EDGE = "#bbbbbb", "#d08c00"
SALIENCY_COLOR = "#8c2d04"
LABEL_COLOR, CELL_TEXT_COLOR, SPARK_BACKGROUND, PROMPT_SHADE = "#555555", "white", "#fafafa", "#000000"


def text_div(text: str, **kw) -> Div:
    """A Div whose HTML we built (untrusted parts escaped). MathJax is off: a prompt holding
    `$$\\href{javascript:...}$$` must stay text, and html.escape alone does not stop TeX."""
    return Div(text=text, disable_math=True, **kw)


def _display(token: str) -> str:
    if token and not token.strip(" "):  # a token of spaces only would be invisible
        return "␣" * len(token)
    return token.replace("\n", "↵").replace("\t", "⇥").replace("\r", "")


def token_layout(tokens: list[str], width_chars: int = 90) -> dict:
    """Running-text positions: tokens placed left to right, wrapped at `width_chars`, a line break
    after a token holding a newline. Returns x (centre), y (line, downwards) and w (box width)."""
    xs, ys, ws = [], [], []
    col, line = 0, 0
    for tok in tokens:
        text = _display(tok)
        n = max(len(text), 1)
        if col and col + n > width_chars:
            col, line = 0, line + 1
        xs.append((col + n / 2) * CHAR_W)
        ys.append(-line * LINE_H)
        ws.append(n * CHAR_W)
        col += n + 0.4
        if "\n" in tok:
            col, line = 0, line + 1
    return {"x": xs, "y": ys, "w": ws, "lines": line + 1}


def _text_figure(lay, height_extra=0, **kw):
    width = int(max(max(x + w / 2 for x, w in zip(lay["x"], lay["w"])) + 2 * PAD, 300))
    height = int(lay["lines"] * LINE_H + 20 + height_extra)
    p = figure(width=width, height=height, x_range=Range1d(-PAD, width - PAD),
               y_range=Range1d(-(lay["lines"] - 0.5) * LINE_H - height_extra, LINE_H / 2),
               tools="", toolbar_location=None, **kw)
    p.axis.visible = False
    p.grid.visible = False
    p.outline_line_color = None
    return p


def _token_source(expl, lay, name: str, **extra) -> ColumnDataSource:
    n = expl.n_tokens
    kind = ["input"] * expl.n_prompt + ["output"] * (n - expl.n_prompt)
    data = dict(x=lay["x"], y=lay["y"], w=lay["w"], text=[_display(t) for t in expl.tokens], token=list(expl.tokens),
                kind=kind, index=list(range(n)), base=[INPUT_COLOR if k == "input" else OUTPUT_COLOR for k in kind],
                line=[INPUT_EDGE if k == "input" else OUTPUT_EDGE for k in kind], alpha=[0.0] * n, pct=[""] * n)
    data.update(extra)
    return ColumnDataSource(data, name=name)


def saliency_view(expl, method: str | None = None, detailed: bool = False, width_chars: int = 90):
    """Running text; hovering or tapping a generated token paints the earlier tokens by how much
    each contributed to it. `detailed` prints the percentage under every token."""
    methods = list(expl.attributions)
    if not methods:
        return text_div("<p>No attribution was computed.</p>")
    method = method or methods[0]
    lay = token_layout(expl.tokens, width_chars)
    src = _token_source(expl, lay, "saliency_tokens")
    p = _text_figure(lay, name="saliency")
    p.rect("x", "y", "w", LINE_H * 0.72, source=src, fill_color="base", line_color="line", name="token_boxes")
    p.rect("x", "y", "w", LINE_H * 0.72, source=src, fill_color=SALIENCY_COLOR, fill_alpha="alpha",
           line_color=None, name="saliency_boxes")
    p.text("x", "y", text="text", source=src, text_align="center", text_baseline="middle",
           text_font=value("monospace"), text_font_size="14px")
    if detailed:
        p.text("x", "y", text="pct", source=src, y_offset=15, text_align="center", text_baseline="middle",
               text_font_size="9px", text_color=LABEL_COLOR)
    matrices = {m: np.round(a, 5).tolist() for m, a in expl.attributions.items()}
    select = Select(title="attribution method", value=method, options=methods, name="method_select",
                    visible=len(methods) > 1)
    paint = CustomJS(args=dict(src=src, mats=matrices, select=select, n_prompt=expl.n_prompt), code="""
        // hovered token, else tapped token, else the last one shown (when the method changes)
        let idx = (cb_data && cb_data.index) ? cb_data.index.indices : [];
        if (idx.length == 0) idx = src.selected.indices.length ? src.selected.indices : src.tags;
        if (!idx || idx.length == 0) return;
        const i = idx[idx.length - 1];
        src.tags = [i];
        const d = src.data, n = d.x.length;
        const alpha = new Array(n).fill(0), pct = new Array(n).fill("");
        if (i >= n_prompt) {
            const row = mats[select.value][i - n_prompt];
            const mx = Math.max(...row, 1e-12);
            for (let j = 0; j < i; j++) { alpha[j] = 0.85 * row[j] / mx; pct[j] = (100 * row[j]).toFixed(1) + "%"; }
            alpha[i] = 0; pct[i] = "▲";
        }
        src.data = Object.assign({}, d, {alpha: alpha, pct: pct, focus: new Array(n).fill(i)});
    """)
    hover = HoverTool(tooltips=[("token", "@token"), ("position", "@index"), ("", "@kind")],
                      callback=paint, renderers=[p.renderers[0]])
    p.add_tools(hover, TapTool(renderers=[p.renderers[0]]))
    src.selected.js_on_change("indices", paint)
    select.js_on_change("value", paint)
    title = text_div(f"<b>Input saliency</b> ({html.escape(method)}{', choose above' if len(methods) > 1 else ''}): "
                     "hover or tap a generated token (yellow) to see which tokens produced it")
    return column(title, select, p, name="saliency_view")


def _rank_grid(src: ColumnDataSource, n_cols: int, n_layers: int, col_width: int, min_width: int, **kw):
    """Layers (rows, first on top) x columns of rank cells: log colour scale (rank 1 darkest), the
    rank printed in each cell, a colour bar."""
    mapper = LogColorMapper(palette=Viridis256, low=1, high=max(2, max(src.data["rank"])))
    p = figure(width=max(min_width, col_width * n_cols + 80), height=36 * n_layers + 90, tools="",
               toolbar_location=None, x_range=Range1d(-0.5, n_cols - 0.5), y_range=Range1d(n_layers + 0.5, 0.5), **kw)
    p.rect("x", "y", 0.95, 0.95, source=src, fill_color={"field": "rank", "transform": mapper}, line_color=None)
    p.text("x", "y", text="label", source=src, text_align="center", text_baseline="middle",
           text_color=CELL_TEXT_COLOR, text_font_size="11px")
    p.xaxis.ticker = list(range(n_cols))
    p.yaxis.ticker = list(range(1, n_layers + 1))
    p.grid.visible = False
    p.add_layout(ColorBar(color_mapper=mapper, ticker=BasicTicker(), title="rank"), "right")
    return p


def rankings_view(expl, k: int = 5):
    """Layers x generated tokens: the rank of each produced token after each layer (logit lens with
    the final norm); hover a cell for that layer's top-k."""
    ranks = expl.rankings()                                          # [n_layers, n_gen]
    n_layers, n_gen = ranks.shape
    xs, ys, rk, tok, top = [], [], [], [], []
    for l in range(n_layers):
        for t in range(n_gen):
            pos = expl.n_prompt - 1 + t
            xs.append(t)
            ys.append(l + 1)
            rk.append(int(ranks[l, t]))
            tok.append(expl.tokens[expl.n_prompt + t])
            top.append(" | ".join(f"{expl.top_tokens[l][pos][j]!r} {expl.top_probs[l, pos, j]:.1%}"
                                  for j in range(min(k, expl.top_ids.shape[-1]))))
    src = ColumnDataSource(dict(x=xs, y=ys, rank=rk, token=tok, top=top, label=[str(r) for r in rk]), name="ranks")
    p = _rank_grid(src, n_gen, n_layers, 60, 300, name="rankings", title="Rank of each generated token after each layer")
    p.xaxis.major_label_overrides = {t: _display(expl.tokens[expl.n_prompt + t]) for t in range(n_gen)}
    p.xaxis.major_label_orientation = 0.8
    p.xaxis.axis_label = "generated token"
    p.yaxis.axis_label = "after layer"
    p.add_tools(HoverTool(tooltips=[("token", "@token"), ("rank", "@rank"), ("top", "@top")]))
    return p


def watch_view(expl, position: int | None = None):
    """Layers x watched tokens: each watched token's rank at one position (default: the position
    that predicts the first generated token)."""
    if not expl.watched:
        return text_div("")
    pos = expl.n_prompt - 1 if position is None else position
    names = list(expl.watched)
    xs, ys, rk = [], [], []
    for i, name in enumerate(names):
        for l in range(expl.n_layers):
            xs.append(i)
            ys.append(l + 1)
            rk.append(int(expl.watched[name][l, pos]))
    src = ColumnDataSource(dict(x=xs, y=ys, rank=rk, label=[str(r) for r in rk],
                                token=[names[i] for i in xs]), name="watch")
    p = _rank_grid(src, len(names), expl.n_layers, 90, 420, name="watch",
                   title=f"Ranks of watched tokens after {_display(expl.tokens[pos])!r}")
    p.xaxis.major_label_overrides = {i: n for i, n in enumerate(names)}
    p.add_tools(HoverTool(tooltips=[("token", "@token"), ("rank", "@rank")]))
    return p


def factors_view(expl, factors, width_chars: int = 80):
    """Sparklines of each factor over the sequence (left); the text coloured by each token's dominant
    factor (right). Hovering or tapping a sparkline isolates that factor on the text."""
    k, n = factors.k, expl.n_tokens
    tf = factors.token_factors / np.maximum(factors.token_factors.max(0, keepdims=True), 1e-12)  # [n, k]
    palette = [Category10_10[f % 10] for f in range(k)]
    dom = factors.dominant()
    lay = token_layout(expl.tokens, width_chars)
    dom_alpha = [float(0.15 + 0.75 * tf[i, dom[i]]) for i in range(n)]
    dom_color = [palette[d] for d in dom]
    src = _token_source(expl, lay, "factor_tokens", color=dom_color, alpha=dom_alpha, factor=[int(d) + 1 for d in dom],
                        dom_color=dom_color, dom_alpha=dom_alpha)
    p = _text_figure(lay, name="factor_text")
    p.rect("x", "y", "w", LINE_H * 0.72, source=src, fill_color="base", line_color="line")
    p.rect("x", "y", "w", LINE_H * 0.72, source=src, fill_color="color", fill_alpha="alpha", line_color=None,
           name="factor_boxes")
    p.text("x", "y", text="text", source=src, text_align="center", text_baseline="middle",
           text_font=value("monospace"), text_font_size="14px")
    p.add_tools(HoverTool(tooltips=[("token", "@token"), ("dominant factor", "@factor")],
                          renderers=[p.renderers[0]]))
    isolate_code = """
        const d = src.data, n = d.x.length;
        const color = new Array(n).fill(palette[f]), alpha = new Array(n);
        for (let i = 0; i < n; i++) alpha[i] = 0.9 * acts[i];
        src.data = Object.assign({}, d, {color: color, alpha: alpha});
    """
    sparks = []
    for f in range(k):
        s_src = ColumnDataSource(dict(x=list(range(n)), y=tf[:, f].tolist(), token=list(expl.tokens)))
        s = figure(width=220, height=48, tools="", toolbar_location=None, name=f"sparkline_{f}",
                   x_range=Range1d(-0.5, n - 0.5), y_range=Range1d(-0.05, 1.1), min_border=2)
        s.axis.visible = False
        s.grid.visible = False
        s.outline_line_color = None
        s.background_fill_color = SPARK_BACKGROUND
        s.line("x", "y", source=s_src, color=palette[f], line_width=2)
        bars = s.vbar("x", 1, top=1.1, bottom=-0.05, source=s_src, fill_alpha=0, line_alpha=0)
        s.varea(x=[-0.5, expl.n_prompt - 0.5], y1=[-0.05, -0.05], y2=[1.1, 1.1], fill_color=PROMPT_SHADE,
                fill_alpha=0.04)
        cb = CustomJS(args=dict(src=src, palette=palette, f=f, acts=tf[:, f].tolist()), code=isolate_code)
        s.add_tools(HoverTool(tooltips=[("factor", str(f + 1)), ("token", "@token")], renderers=[bars],
                              callback=cb, mode="vline"))
        s.js_on_event("tap", cb)
        label = text_div(f"<span style='color:{palette[f]};font-weight:bold'>factor {f + 1}</span>", width=70)
        sparks.append(row(label, s))
    reset = CustomJS(args=dict(src=src), code="""
        src.data = Object.assign({}, src.data, {color: src.data.dom_color, alpha: src.data.dom_alpha});""")
    p.js_on_event("mouseenter", reset)
    layers = factors.layers
    where = f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"
    title = text_div(f"<b>Neuron activation factors</b>: {factors.method.upper()} of the MLP neurons of {where} "
                     f"into {k} factors ({factors.explained:.0%} of the activations explained). Hover a sparkline "
                     "to isolate its factor; the shaded part of each sparkline is the prompt.")
    return column(title, row(column(*sparks), p), name="factors_view")


def activations_view(expl, layer: int, n_neurons: int = 64, clusters: int = 6, seed: int = 0):
    """Heatmap of the `n_neurons` most active neurons of `layer` over all tokens, neurons ordered by
    k-means cluster of their activation patterns; positive activations coloured."""
    from ..analysis.neurons import cluster_neurons, select_layers

    layer = select_layers(expl.n_layers, layer)[0]
    acts = expl.activations[layer].astype(np.float32)                    # [n_tokens, d_mlp]
    n_neurons = min(n_neurons, acts.shape[1])
    top = np.argsort(-acts.max(0))[:n_neurons]
    c = cluster_neurons(expl.activations[[layer]].astype(np.float32), min(clusters, n_neurons), layers=[0],
                        seed=seed, neurons=top)
    ordered = top[c.order]
    img = np.maximum(acts[:, ordered].T, 0)                              # [n_neurons, n_tokens]
    n = expl.n_tokens
    mapper = LinearColorMapper(palette=Viridis256[::-1][40:], low=0, high=float(max(img.max(), 1e-6)))
    p = figure(width=max(400, 22 * n + 120), height=min(900, 8 * n_neurons + 120), tools="",
               toolbar_location=None, x_range=Range1d(-0.5, n - 0.5), y_range=Range1d(0, n_neurons),
               title=f"Layer {layer}: {n_neurons} most active neurons, ordered by cluster", name="activations")
    p.image(image=[img[::-1]], x=-0.5, y=0, dw=n, dh=n_neurons, color_mapper=mapper)  # row 0 drawn on top
    p.xaxis.ticker = list(range(n))
    p.xaxis.major_label_overrides = {i: _display(t) for i, t in enumerate(expl.tokens)}
    p.xaxis.major_label_orientation = 1.2
    p.yaxis.axis_label = "neuron (cluster order, first on top)"
    p.yaxis.visible = False
    p.grid.visible = False
    p.add_tools(HoverTool(tooltips=[("activation", "@image{0.000}")]))
    p.add_layout(ColorBar(color_mapper=mapper, title="activation"), "right")
    return p
