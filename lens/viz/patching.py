"""Activation patching (`lens.grad.patching.Patching`) as heatmaps: for the residual stream and the MLP
neurons, layers x positions; for the heads, layers x heads. Each exact heatmap beside attribution
patching's estimate of it, on one diverging colour scale (blue: the patch restores the clean answer,
red: it pushes further away), and how well the two agree. Computes nothing."""
from __future__ import annotations

import html

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColorBar, ColumnDataSource, HoverTool, LinearColorMapper, Range1d
from bokeh.palettes import RdBu11
from bokeh.plotting import figure

from .style import NOTE_STYLE, drop_grids, label, plain, save_buttons_only, saveable, text_div, text_color

TITLES = {"resid_pre": "residual stream entering each layer (blocks.L.hook_resid_pre), per position",
          "z": "each attention head's output (blocks.L.attn.hook_z), at every position",
          "mlp_post": "MLP neurons (blocks.L.mlp.hook_post), per position"}
PALETTE = tuple(reversed(RdBu11))  # low red, high blue


def effect_grid(values: np.ndarray, columns: list[str], name: str, title: str, x_label: str, limit: float,
                rows: list[str] | None = None, y_label: str = "layer", digits: int = 2):
    """Layers (rows, layer 0 on top; or `rows` labelled) x columns of cells on a diverging scale in [-limit, limit], the
    value printed in each cell where it fits, hover for the column and value."""
    n_layers, n_cols = values.shape
    cell_w = int(np.clip(500 // max(n_cols, 1), 18, 56))  # two grids and their colour bars side by side in 1,400 px
    cell_h = 18 if n_layers > 16 else 26
    ys, xs = np.meshgrid(np.arange(n_layers), np.arange(n_cols), indexing="ij")
    mapper = LinearColorMapper(palette=PALETTE, low=-limit, high=limit)
    v = values.ravel()
    idx = np.clip(((v + limit) / (2 * limit) * len(PALETTE)).astype(int), 0, len(PALETTE) - 1)
    fills = [PALETTE[i] for i in idx]
    src = ColumnDataSource(dict(x=xs.ravel(), y=ys.ravel(), value=v, fill=fills,
                                color=[text_color(f) for f in fills],
                                text=[f"{x:.{digits}f}".replace("0.", ".") if abs(x) >= 0.5 * 10 ** -digits else ""
                                      for x in v],
                                column=[columns[x] for x in xs.ravel()],
                                layer=[rows[y] for y in ys.ravel()] if rows else ys.ravel()), name=f"{name}_cells")
    p = figure(frame_width=cell_w * n_cols, frame_height=cell_h * n_layers, tools="", toolbar_location=None,
               x_range=Range1d(-0.5, n_cols - 0.5), y_range=Range1d(n_layers - 0.5, -0.5), name=name,
               x_axis_location="above")
    p.title.text = plain(title)
    saveable(p, name)
    p.rect("x", "y", 0.96, 0.94, source=src, fill_color="fill", line_color=None)
    if cell_w >= 30:
        p.text("x", "y", text="text", source=src, text_align="center", text_baseline="middle", text_color="color",
               text_font_size="9px")
    p.xaxis.ticker = list(range(n_cols))
    p.xaxis.major_label_overrides = {i: plain(c) for i, c in enumerate(columns)}
    p.xaxis.major_label_orientation = "vertical" if cell_w < 50 else "horizontal"
    p.xaxis.axis_label = x_label
    p.yaxis.ticker = list(range(n_layers))
    if rows:
        p.yaxis.major_label_overrides = {i: plain(r) for i, r in enumerate(rows)}
    p.yaxis.axis_label = y_label
    drop_grids(p)
    p.add_layout(ColorBar(color_mapper=mapper, width=12, title="effect"), "right")
    p.add_tools(HoverTool(tooltips=[(y_label, "@layer"), (x_label, "@column"), ("effect", "@value{0.0000}")]))
    return p


def patching_view(result):
    """The header (prompts, answer and foil, the metric on both) and one row per kind: exact | estimate."""
    e = html.escape
    clean, corrupt = result.clean_tokens, result.corrupted_tokens
    columns = [label(c) if c == x else f"{label(c)}→{label(x)}" for c, x in zip(clean, corrupt)]
    head = text_div(
        f"<h2>lens patch: {e(result.model_name)}</h2>"
        f"<p><b>Clean:</b> <span class='lens-text'>{e(''.join(clean))}</span><br>"
        f"<b>Corrupted:</b> <span class='lens-text'>{e(''.join(corrupt))}</span><br>"
        f"<b>Metric:</b> logit({e(repr(result.answer))}) − logit({e(repr(result.foil))}) at the last position: "
        f"{result.clean_metric:.3f} clean, {result.corrupted_metric:.3f} corrupted.</p>"
        f"<p style='{NOTE_STYLE}'>Each cell: the corrupted run with that one activation taken from the clean run, "
        f"(m(patched) − m(corrupted)) / (m(clean) − m(corrupted)): 1 (blue) restores the clean answer, 0 does "
        f"nothing, negative (red) pushes further away. Right: attribution patching's first-order estimate of the "
        f"same numbers from one backward pass. {result.runs} patched runs took "
        f"{result.timings.get('activation_patching', 0):.2f} s, the estimate "
        f"{result.timings.get('attribution_patching', 0):.2f} s.</p>", width=1200, name="patching_header",
        styles={"white-space": "pre-wrap"})
    parts = [head]
    for kind, exact in result.exact.items():
        estimate = result.estimate[kind]
        limit = float(max(np.abs(exact).max(), np.abs(estimate).max(), 1e-6))
        cols = [str(h) for h in range(exact.shape[1])] if kind == "z" else columns
        x_label = "head" if kind == "z" else "position (clean→corrupted where they differ)"
        a = result.agreement(kind)
        parts += [text_div(f"<h3>{e(TITLES[kind])}</h3><p style='{NOTE_STYLE}'>attribution patching against the "
                           f"exact numbers: Pearson r = {a['pearson_r']:.2f}, largest gap "
                           f"{a['max_abs_difference']:.2f}</p>", name=f"patching_{kind}_title"),
                  row(effect_grid(exact, cols, f"patching_{kind}", "activation patching", x_label, limit),
                      effect_grid(estimate, cols, f"attribution_patching_{kind}", "attribution patching (estimate)",
                                  x_label, limit), name=f"patching_{kind}_row")]
    return save_buttons_only(column(*parts, name="patching_view"))


def save_patching(result, path):
    """Write the standalone page atomically."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    from ..files import output_path, write_atomic

    output_path(path, "patching page")
    text = file_html(patching_view(result), resources=INLINE, title=f"lens patch: {result.model_name}")
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"), "patching page")
