"""The hidden-state evolution views: the rank of each produced token after every layer, the top-k
candidates after every layer at a chosen position, and the ranks of watched tokens."""
from __future__ import annotations

import json

import numpy as np
from bokeh.core.properties import value
from bokeh.layouts import column
from bokeh.models import (ColorBar, ColumnDataSource, CustomJS, HoverTool, LinearColorMapper,
                          LogColorMapper, LogTicker, Range1d, Select)
from bokeh.palettes import Blues256, Viridis256
from bokeh.plotting import figure

from .style import NOTE_STYLE, drop_grids, saveable, js, label, plain, text_color, text_div

MAX_WIDTH = 1300      # px a grid may take before it scrolls inside its own panel
PROB_PALETTE = Blues256[::-1]  # white (p = 0) to dark blue (p = 1)
RANK_TEXT = [text_color(c) for c in Viridis256]     # the readable text colour on each palette entry
PROB_TEXT = [text_color(c) for c in PROB_PALETTE]


def short_rank(r: int) -> str:
    """A rank that fits a narrow cell: 7, 153, 12k."""
    return str(r) if r < 1000 else f"{r // 1000}k"


def _rank_colors(ranks: np.ndarray, high: int) -> tuple[list, list]:
    """Cell fill (Viridis, log scale as the colour bar shows it) and a readable text colour per cell."""
    idx = np.rint(255 * np.log(np.clip(ranks, 1, high)) / np.log(high)).astype(int).ravel()
    return [Viridis256[i] for i in idx], [RANK_TEXT[i] for i in idx]


def rank_grid(ranks: np.ndarray, columns: list[str], name: str, title: str, x_label: str, extra: dict | None = None,
              tooltips=None):
    """Layers (rows, layer 1 on top) x columns of rank cells: log colour scale (rank 1 darkest)
    with a colour bar, the rank in each cell in a colour readable on it, column labels on top."""
    n_layers, n_cols = ranks.shape
    high = max(2, int(ranks.max()))
    cell_w = int(np.clip((MAX_WIDTH - 160) // max(n_cols, 1), 26, 64))
    title_w = int(7.2 * len(title)) + 10        # px of the bold 13 px title: a grid of a few columns widens to it
    if cell_w * n_cols < title_w:
        cell_w = min(-(-title_w // max(n_cols, 1)), 320)
    cell_h = 22 if n_layers > 16 else 30
    ys, xs = np.meshgrid(np.arange(1, n_layers + 1), np.arange(n_cols), indexing="ij")
    fills, colors = _rank_colors(ranks, high)
    data = dict(x=xs.ravel(), y=ys.ravel(), rank=ranks.ravel(), fill=fills,
                color=colors, label=[short_rank(int(r)) for r in ranks.ravel()],
                column=[columns[x] for x in xs.ravel()])
    data.update(extra or {})
    src = ColumnDataSource(data, name=f"{name}_cells")
    p = figure(frame_width=cell_w * n_cols, frame_height=cell_h * n_layers, tools="", toolbar_location=None,
               x_range=Range1d(-0.5, n_cols - 0.5), y_range=Range1d(n_layers + 0.5, 0.5), name=name,
               x_axis_location="above")
    p.title.text = plain(title)
    saveable(p, name)
    p.rect("x", "y", 0.96, 0.94, source=src, fill_color="fill", line_color=None)
    p.text("x", "y", text="label", source=src, text_align="center", text_baseline="middle", text_color="color",
           text_font_size="10px" if cell_w < 40 else "11px")
    p.xaxis.ticker = list(range(n_cols))
    p.xaxis.major_label_overrides = {i: plain(c) for i, c in enumerate(columns)}
    p.xaxis.major_label_orientation = "vertical" if cell_w < 60 else "horizontal"
    p.xaxis.major_label_text_font_size = "12px"
    p.xaxis.axis_label = x_label
    p.yaxis.ticker = list(range(1, n_layers + 1))
    p.yaxis.axis_label = "after layer"
    drop_grids(p)
    mapper = LogColorMapper(palette=Viridis256, low=1, high=high)
    p.add_layout(ColorBar(color_mapper=mapper, ticker=LogTicker(), title="rank", width=12), "right")
    p.add_tools(HoverTool(tooltips=tooltips or [("token", "@column"), ("rank", "@rank")]))
    return p


def followed(expl) -> int:
    """The first position whose token the rank views follow: the first generated token, or, for a
    text explained without generating (max_new_tokens 0), its second (each token is ranked where the
    position before predicts it)."""
    return expl.n_prompt if expl.n_generated else 1


def rankings_view(expl, k: int = 5):
    """Layers x generated tokens (or, for a text, its tokens): the rank of each token after each layer
    where the position before predicts it (logit lens with the final norm); hover a cell for that
    layer's top-k."""
    first = followed(expl)
    ranks = expl.ranks[:, first - 1:expl.n_tokens - 1]               # [n_layers, n_followed]
    n_layers, n_cols = ranks.shape
    if not n_cols:
        return text_div("")
    def top(l, pos):  # this layer's top-k at the position that predicts the token
        return " | ".join(f"{label(expl.top_tokens[l][pos][j])} {expl.top_probs[l, pos, j]:.1%}"
                          for j in range(min(k, expl.top_ids.shape[-1])))
    tops = [top(l, first - 1 + t) for l in range(n_layers) for t in range(n_cols)]
    what = "generated token" if expl.n_generated else "token of the text"
    p = rank_grid(ranks, [label(t) for t in expl.tokens[first:]], "rankings", f"Rank of each {what} after each "
                  f"layer (1 = the model's top choice)", what, extra={"top": tops},
                  tooltips=[("token", "@column"), ("rank", "@rank"), ("top", "@top")])
    return _panel(p, "rankings_view")


def layer_predictions_view(expl, position: int | None = None):
    """The top-k tokens and their probabilities after every layer at one position (default: the
    position that predicts the first generated token), as Ecco's layer_predictions; a menu picks
    another position."""
    n_layers, n, k = expl.top_ids.shape
    pos = expl.n_prompt - 1 if position is None else position
    # every position's cells, compactly: indices into one table of token labels, the percentage
    # shown (-1: "<1%") and the palette index (a 2,000-token prompt made 29 MB of strings before)
    index: dict[str, int] = {}
    cells = {}
    for i in range(n):
        probs = expl.top_probs[:, i, :].ravel()
        texts = [label(expl.top_tokens[l][i][j]) for l in range(n_layers) for j in range(k)]
        cells[str(i)] = [[index.setdefault(t, len(index)) for t in texts],
                         [int(f"{v:.0%}"[:-1]) if v >= 0.005 else -1 for v in probs],
                         np.rint(255 * np.clip(probs, 0, 1)).astype(int).tolist()]
    tokens = list(index)

    def columns(i: int) -> dict:  # what layer_predictions.js builds from cells[i]
        t, pct, c = cells[str(i)]
        return dict(text=[tokens[x] for x in t], prob=[f"{x}%" if x >= 0 else "<1%" for x in pct],
                    fill=[PROB_PALETTE[x] for x in c], color=[PROB_TEXT[x] for x in c])

    ys, xs = np.meshgrid(np.arange(1, n_layers + 1), np.arange(1, k + 1), indexing="ij")
    src = ColumnDataSource(dict(x=xs.ravel(), y=ys.ravel(), **columns(pos)), name="layer_predictions_cells")
    cell_w, cell_h = 112, 22 if n_layers > 16 else 30
    p = figure(frame_width=cell_w * k, frame_height=cell_h * n_layers, tools="", toolbar_location=None,
               x_range=Range1d(0.5, k + 0.5), y_range=Range1d(n_layers + 0.5, 0.5), name="layer_predictions",
               x_axis_location="above")
    p.rect("x", "y", 0.97, 0.92, source=src, fill_color="fill", line_color="#dddddd")
    p.text("x", "y", text="text", source=src, x_offset=-cell_w / 2 + 5, text_align="left", text_baseline="middle",
           text_color="color", text_font_size="12px", text_font=value("monospace"))
    p.text("x", "y", text="prob", source=src, x_offset=cell_w / 2 - 5, text_align="right", text_baseline="middle",
           text_color="color", text_font_size="10px")
    saveable(p, "layer_predictions")
    p.xaxis.ticker = list(range(1, k + 1))
    p.xaxis.axis_label = "candidate (1 = most probable)"
    p.yaxis.ticker = list(range(1, n_layers + 1))
    p.yaxis.axis_label = "after layer"
    drop_grids(p)
    p.add_layout(ColorBar(color_mapper=LinearColorMapper(palette=PROB_PALETTE, low=0, high=1), title="p",
                          width=12), "right")
    options = [(str(i), f"{i}: {label(expl.tokens[i])} → {label(expl.tokens[i + 1]) if i + 1 < n else '(end)'}")
               for i in range(n)]
    select = Select(title="position (its token → the token it predicts)", value=str(pos), options=options,
                    name="position_select", width=420)
    # one JSON string, parsed in the page: Bokeh walks every element of a nested list it serialises
    data = json.dumps(dict(tokens=tokens, palette=list(PROB_PALETTE), text=PROB_TEXT, cells=cells))
    select.js_on_change("value", CustomJS(args=dict(src=src, data=data), code=js("layer_predictions")))
    title = text_div("<b>Layer predictions</b>: the most probable next tokens after each layer at one position "
                     "(logit lens through the final norm)")
    return column(title, select, _panel(p, "layer_predictions_panel"), name="layer_predictions_view")


def watch_view(expl):
    """For each watched token: its rank after each layer at every position that predicts a generated
    token (a string of several tokens is followed by its first token, and the title says so)."""
    if not expl.watched:
        return text_div("")
    parts = [text_div("<b>Watched tokens</b>: the rank of a token you chose after each layer, at each step "
                      "of the generation (the column names the token actually generated there)")]
    first = followed(expl)
    cols = [label(t) for t in expl.tokens[first:]]
    if not cols:
        return text_div("")
    for i, (name, ranks) in enumerate(expl.watched.items()):
        pieces = expl.settings.get("watch_tokens", {}).get(name, [name])
        note = "" if len(pieces) <= 1 else \
            f" (first of its {len(pieces)} tokens: {' + '.join(label(t) for t in pieces)})"
        grid = ranks[:, first - 1:expl.n_tokens - 1]                        # [n_layers, n_followed]
        p = rank_grid(grid, cols, f"watch_{i}", f"Rank of {label(name)}{note}",
                      "generated at this step" if expl.n_generated else "the text's token at this step")
        parts.append(_panel(p, f"watch_panel_{i}"))
    parts.append(text_div(f"<span style='{NOTE_STYLE}'>␣ marks a space.</span>"))
    return column(*parts, name="watch_view")


def _panel(p, name: str):
    """A view that scrolls inside its own box when it is wider than the page."""
    return column(p, name=name, styles={"overflow-x": "auto", "max-width": f"{MAX_WIDTH + 80}px"})



SPARK_TOP, SPARK_BOTTOM = 16, 38   # px below a token's line centre: the sparkline's band (rank 1 at the top)
SPARK_LINE_H = 70
SPARK_CHARS = 6     # a token box at least this wide: 30 layers' points ~1.5 px apart
SPARK_FLOOR = 1000  # ranks from this one down share the band's bottom: a fixed scale, the same for every token
SETTLED_COLOR, CLIMBING_COLOR = "#1a9850", "#555555"


def ranks_in_text_view(expl, width_chars: int = 120):
    """The hidden-state evolution in the running text (the article's future work: "imposing the ranking
    as a sparkline right next to the tokens in a paragraph"): under every token, its logit-lens rank
    after each layer where the position before predicts it, log scale, rank 1 at the top; green from the
    layer on which the token stays the top choice. Hover a token for the numbers."""
    from .text import draw_tokens, text_figure, token_layout, token_source

    ranks = expl.ranks[:, :expl.n_tokens - 1]                         # [L, n - 1]: token i's ranks in column i - 1
    n_layers, n = ranks.shape[0], expl.n_tokens
    if n < 2:
        return text_div("")
    lay = token_layout(expl.tokens, width_chars, SPARK_LINE_H, SPARK_CHARS)
    high = float(SPARK_FLOOR)
    xs, ys, colors, owner, settled, numbers = [], [], [], [], [], [""]
    for i in range(1, n):
        r = ranks[:, i - 1]
        x0, w, y = lay["x"][i] - lay["w"][i] / 2 + 3, lay["w"][i] - 6, lay["y"][i]
        px = [x0 + w * l / max(n_layers - 1, 1) for l in range(n_layers)]
        py = [y - SPARK_TOP - (SPARK_BOTTOM - SPARK_TOP) * float(np.log(min(v, high)) / np.log(high)) for v in r]
        top = np.flatnonzero(r != 1)
        first = 0 if not len(top) else int(top[-1]) + 1                   # rank 1 from this layer to the last
        xs.append(px)
        ys.append(py)
        colors.append(CLIMBING_COLOR)
        owner.append(i)
        if first < n_layers:   # the settled part drawn again, in green
            xs.append(px[first:] if first < n_layers - 1 else [px[-1] - 1.5, px[-1]])
            ys.append(py[first:] if first < n_layers - 1 else [py[-1], py[-1]])
            colors.append(SETTLED_COLOR)
            owner.append(i)
        settled.append(f"rank 1 from layer {first + 1}" if first < n_layers else "never rank 1 at the end")
        numbers.append(" ".join(short_rank(int(v)) for v in r))
    src = token_source(expl, lay, "ranks_text_tokens", ranks=numbers, settled=[""] + settled)
    p = text_figure(lay, name="ranks_text")
    boxes = draw_tokens(p, src)
    lines = ColumnDataSource(dict(xs=xs, ys=ys, color=colors, token_index=owner), name="rank_sparklines")
    p.multi_line("xs", "ys", source=lines, line_color="color", line_width=1.5)
    p.add_tools(HoverTool(renderers=[boxes], tooltips=[("token", "@token"), ("rank after layers 1..", "@ranks"),
                                                        ("", "@settled")]))
    what = "generated token" if expl.n_generated else "token"
    head = text_div(f"<b>Ranks in the text</b>: under each {what}, its rank after every layer (left: layer 1, "
                    f"right: layer {n_layers}; log scale from rank 1 at the top to {SPARK_FLOOR} and beyond at the "
                    f"bottom), where the position before predicts it; <span style='color:{SETTLED_COLOR}'>green"
                    f"</span> from the layer on which it stays the model's top choice. Prompt tokens (grey) too: "
                    f"how expected each one was. Hover a token for the numbers.", name="ranks_text_title", width=1200)
    return column(head, p, name="ranks_text_view")
