"""The head view: hover a token to paint the tokens it attends to, for a chosen layer and head (or the
mean over heads), in the same running text as the saliency view. Computes nothing: the probabilities
come from `Explanation.attention` (`explain(..., attention=True)`)."""
from __future__ import annotations

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import CustomJS, HoverTool, Select, TapTool

from .style import INPUT_COLOR, NOTE_STYLE, OUTPUT_COLOR, SALIENCY_COLOR, js, rgb, text_div
from .text import LABEL_DY, LABEL_FONT, draw_tokens, significant, text_figure, token_layout, token_source


def head_view(expl, width_chars: int = 120):
    att = expl.attention                                                   # [L, H, n, n]
    if not att.size:
        return text_div("")
    n_layers, n_heads = att.shape[:2]
    with_mean = np.concatenate([att.astype(np.float32), att.astype(np.float32).mean(1, keepdims=True)], 1)
    lay = token_layout(expl.tokens, width_chars)
    src = token_source(expl, lay, "head_tokens")
    p = text_figure(lay, name="heads")
    boxes = draw_tokens(p, src, overlay=dict(fill_color=SALIENCY_COLOR, fill_alpha="alpha"))
    p.text("x", "y", text="pct", source=src, y_offset=LABEL_DY, text_align="center", text_baseline="middle",
           text_font_size=LABEL_FONT, text_color="#333333")
    layer = Select(title="layer", value="1", options=[str(l) for l in range(1, n_layers + 1)], name="head_layer",
                   width=90)
    head = Select(title="head", value="mean", options=["mean"] + [str(h) for h in range(1, n_heads + 1)],
                  name="head_head", width=90)
    details = text_div(f"<span style='{NOTE_STYLE}'>Hover or tap a token.</span>", name="head_details", width=1100)
    paint = CustomJS(args=dict(src=src, pats=[[[significant(r, 4).tolist() for r in h] for h in l] for l in with_mean],
                               layer=layer, head=head, details=details, paint_rgb=rgb(SALIENCY_COLOR),
                               input_rgb=rgb(INPUT_COLOR), output_rgb=rgb(OUTPUT_COLOR)),
                     code=js("colors", "attention"))
    p.add_tools(HoverTool(tooltips=None, callback=paint, renderers=[boxes]), TapTool(renderers=[boxes]))
    src.selected.js_on_change("indices", paint)
    layer.js_on_change("value", paint)
    head.js_on_change("value", paint)
    title = text_div("<b>Attention</b>: hover or tap a token to paint the tokens it attends to, in the chosen layer "
                     "and head (or their mean), with each one's share written under it. <span style='"
                     f"{NOTE_STYLE}'>The first position (the attention sink) often takes most of a row: it is left "
                     "unpainted, the colours scale over the others, and the panel gives its share.</span>", width=1200)
    return column(title, row(layer, head), details, p, name="head_view")
