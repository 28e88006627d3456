"""Two explanations side by side (`analysis.compare.Comparison`): the pairs of generated tokens, most
disagreeing first, in a menu; each run's running text painted with its own attribution row for the
chosen pair, and the difference painted on the first run's text; the two logit-lens rankings side by
side. Like every view, it computes nothing."""
from __future__ import annotations

import html
from types import SimpleNamespace

from bokeh.layouts import column, row
from bokeh.models import CustomJS, Select

from .logit_lens import rank_grid
from .style import save_buttons_only, INPUT_COLOR, NOTE_STYLE, OUTPUT_COLOR, SALIENCY_COLOR, js, label, rgb, text_div
from .text import LABEL_DY, LABEL_FONT, draw_tokens, significant, text_figure, token_layout, token_source

A_COLOR, B_COLOR = "#2166ac", "#b2182b"   # the difference: blue where the first run gives more, red the second


def comparison_view(cmp, width_chars: int = 120):
    a_name, b_name = (html.escape(n) for n in cmp.names)
    if not len(cmp.rows):
        return text_div(f"<h2>lens compare</h2><p>{a_name} and {b_name} have no pair of generated tokens at aligned "
                        f"positions to compare.</p>", name="comparison_view")
    order = [int(i) for i in cmp.order()]
    a_tokens, b_tokens = cmp.tokens
    options = [(str(i), f"{label(a_tokens[cmp.rows[i]])} / {label(b_tokens[cmp.align[cmp.rows[i]]])} at position "
                f"{cmp.rows[i]}: {cmp.disagreement[i]:.0%} apart") for i in order]
    select = Select(title="pair of generated tokens (most disagreeing first)", value=str(order[0]), options=options,
                    name="pair_select", width=700)
    texts, sources = [], {}
    for key, tokens, n_prompt in (("a", a_tokens, cmp.n_prompt[0]), ("b", b_tokens, cmp.n_prompt[1]),
                                  ("diff", a_tokens, cmp.n_prompt[0])):
        run = SimpleNamespace(tokens=tokens, n_prompt=n_prompt, n_tokens=len(tokens))
        lay = token_layout(tokens, width_chars)
        src = token_source(run, lay, f"compare_{key}_tokens", paint=[SALIENCY_COLOR] * len(tokens))
        p = text_figure(lay, name=f"compare_{key}")
        draw_tokens(p, src, overlay=dict(fill_color="paint", fill_alpha="alpha"))
        p.text("x", "y", text="pct", source=src, y_offset=LABEL_DY, text_align="center", text_baseline="middle",
               text_font_size=LABEL_FONT, text_color="#333333")
        sources[key] = src
        texts.append(p)
    paint = CustomJS(args=dict(a=sources["a"], b=sources["b"], diff=sources["diff"], select=select,
                               rows=cmp.rows.tolist(), align=cmp.align.tolist(),
                               a_scores=[significant(r).tolist() for r in cmp.a_scores],
                               b_scores=[significant(r).tolist() for r in cmp.b_own],
                               b_on_a=[significant(r).tolist() for r in cmp.b_scores],
                               paint_rgb=rgb(SALIENCY_COLOR), a_color=A_COLOR, b_color=B_COLOR,
                               input_rgb=rgb(INPUT_COLOR), output_rgb=rgb(OUTPUT_COLOR)),
                     code=js("colors", "compare"))
    select.js_on_change("value", paint)
    mean = float(cmp.disagreement.mean())
    head = text_div(
        f"<h2>lens compare</h2><p><b>A</b>: {a_name}<br><b>B</b>: {b_name}</p><p>{len(cmp.rows)} pairs of generated "
        f"tokens at aligned positions; their attribution rows are on average {mean:.0%} apart (total variation over "
        f"the input tokens both runs share, 0 = the same shares, 100 % = no overlap). <span style='{NOTE_STYLE}'>"
        f"The prompts are aligned by their runs of equal tokens (tokens replacing each other between runs paired in "
        f"order); generated tokens are paired by step.</span>"
        f"</p>", name="comparison_header", width=1200)
    grid_a = rank_grid(cmp.rankings[0], [label(t) for t in a_tokens[cmp.n_prompt[0]:]], "rankings_a",
                       "A: rank of each generated token after each layer", "generated token")
    grid_b = rank_grid(cmp.rankings[1], [label(t) for t in b_tokens[cmp.n_prompt[1]:]], "rankings_b",
                       "B: rank of each generated token after each layer", "generated token")
    legend = text_div(f"<span style='{NOTE_STYLE}'>Top: A's attribution of the chosen generated token (outlined); "
                      f"middle: B's of its pair; bottom: the difference on A's tokens, "
                      f"<span style='color:{A_COLOR}'>blue</span> where A gives a token more of the attribution, "
                      f"<span style='color:{B_COLOR}'>red</span> where B does, in percentage points.</span>")
    layout = column(head, select, text_div("<b>A</b>"), texts[0], text_div("<b>B</b>"), texts[1],
                    text_div("<b>A − B</b>"), texts[2], legend, row(grid_a, grid_b), name="comparison_view")
    return save_buttons_only(layout), paint


def comparison_html(cmp) -> str:
    """The standalone page: the view, painted for the most disagreeing pair when it opens."""
    from bokeh.document import Document
    from bokeh.embed import file_html
    from bokeh.events import DocumentReady
    from bokeh.resources import INLINE

    view = comparison_view(cmp)
    doc = Document()
    if isinstance(view, tuple):
        view, paint = view
        doc.js_on_event(DocumentReady, paint)
    doc.add_root(view)
    return file_html(doc, resources=INLINE, title=f"lens compare: {cmp.names[0][:40]} / {cmp.names[1][:40]}")


def save_comparison(cmp, path):
    """Write the comparison page atomically."""
    from ..files import output_path, write_atomic

    output_path(path, "comparison")
    text = comparison_html(cmp)
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"), "comparison")
