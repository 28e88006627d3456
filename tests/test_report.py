"""The report as a researcher reads it, in real Chromium: labels that never overlap, readable text
on every fill, a details panel in a fixed place, views that fit a 1400 px page, options that steer
the views. Values are read from the page's own data and geometry."""
from __future__ import annotations

import numpy as np
import pytest

from lens.viz.style import SALIENCY_COLOR, contrast, rgb
from lens.viz.text import BOX_H, LABEL_DY
from browser import Page

pytestmark = pytest.mark.browser

PROMPTS = {"counting": "1, 2, 3, 4, 5, 6, 7, 8, 9,",
           "eu": "A list of EU countries:\n1. Austria\n2. Belgium\n3. Bulgaria\n4. Croatia\n5."}


def _open(browser, path):
    pg = Page(browser)
    pg.page.goto(path.as_uri())
    pg.page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                              "Array.from(Bokeh.index.all_views()).length > 5")
    return pg


@pytest.fixture(scope="module", params=list(PROMPTS))
def prompt_report(request, tiny_explainer, tmp_path_factory):
    expl = tiny_explainer.explain(PROMPTS[request.param], max_new_tokens=12)
    path = expl.report(tmp_path_factory.mktemp("r") / f"{request.param}.html", factors=3)
    return expl, path


def _geometry(pg):
    """Screen rectangles [x0, y0, x1, y1] of every token box and every visible percentage label."""
    return pg.page.evaluate("""([boxH, labelDy]) => {
        const v = Array.from(Bokeh.index.all_views()).find(v => v.model.name === 'saliency');
        const d = Bokeh.documents[0].get_model_by_name('saliency_tokens').data;
        const r = v.el.getBoundingClientRect(), xs = v.frame.x_scale, ys = v.frame.y_scale;
        const ctx = document.createElement('canvas').getContext('2d');
        ctx.font = '10px monospace';
        const boxes = [], labels = [];
        for (let i = 0; i < d.x.length; i++) {
            const cx = r.left + xs.compute(d.x[i]), cy = r.top + ys.compute(d.y[i]);
            const w = xs.compute(d.x[i] + d.w[i] / 2) - xs.compute(d.x[i] - d.w[i] / 2);
            boxes.push([cx - w / 2, cy - boxH / 2, cx + w / 2, cy + boxH / 2]);
            if (d.pct[i]) {
                const tw = ctx.measureText(d.pct[i]).width;
                labels.push([cx - tw / 2, cy + labelDy - 6, cx + tw / 2, cy + labelDy + 6]);
            }
        }
        return [boxes, labels, xs.compute(100) - xs.compute(0)];
    }""", [BOX_H, LABEL_DY])


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_labels_never_overlap_labels_or_boxes(browser, prompt_report):
    expl, path = prompt_report
    pg = _open(browser, path)
    try:
        xs, ys = pg.data("saliency_tokens", "x"), pg.data("saliency_tokens", "y")
        for i in (expl.n_prompt, expl.n_tokens - 1):  # the first and the last generated token
            pg.hover("saliency", xs[i], ys[i])
            boxes, labels, px_per_unit = _geometry(pg)
            assert px_per_unit == pytest.approx(100)  # data units are pixels: the geometry is exact
            assert len(labels) >= i - 1  # every earlier token with a share of >= 0.5% has its label
            for a in range(len(labels)):
                for b in range(a + 1, len(labels)):
                    assert not _overlap(labels[a], labels[b]), (a, b)
                for box in boxes:
                    assert not _overlap(labels[a], box), (a, box)
            for a in range(len(boxes)):
                for b in range(a + 1, len(boxes)):
                    assert not _overlap(boxes[a], boxes[b]), (a, b)
    finally:
        pg.close()


def test_painted_text_keeps_wcag_contrast(browser, prompt_report):
    expl, path = prompt_report
    pg = _open(browser, path)
    try:
        xs, ys = pg.data("saliency_tokens", "x"), pg.data("saliency_tokens", "y")
        seen = []
        for i in range(expl.n_prompt, expl.n_tokens):
            pg.hover("saliency", xs[i], ys[i])
            alpha = np.asarray(pg.data("saliency_tokens", "alpha"))
            base, color = pg.data("saliency_tokens", "base"), pg.data("saliency_tokens", "text_color")
            for j in range(expl.n_tokens):
                fill = [alpha[j] * s + (1 - alpha[j]) * b for s, b in zip(rgb(SALIENCY_COLOR), rgb(base[j]))]
                seen.append(contrast(fill, rgb(color[j])))
        assert min(seen) >= 4.5
        assert "#ffffff" in pg.data("saliency_tokens", "text_color") or max(alpha) < 0.5  # dark fills flip
    finally:
        pg.close()


def test_details_panel_names_the_hovered_token(browser, prompt_report):
    expl, path = prompt_report
    pg = _open(browser, path)
    try:
        xs, ys = pg.data("saliency_tokens", "x"), pg.data("saliency_tokens", "y")
        i = expl.n_tokens - 2
        pg.hover("saliency", xs[i], ys[i])
        text = pg.text_of("saliency_details")
        t = i - expl.n_prompt
        row = expl.attributions["grad_x_input"][t]
        top = np.argsort(-row[:i], kind="stable")[:3]
        import json
        assert (f"Position {i} (generated token {t + 1} of {expl.n_generated}): {json.dumps(expl.tokens[i])}, "
                f"p = {expl.probabilities[t]:.3f}") in text
        want = ", ".join(f"{json.dumps(expl.tokens[j])} {100 * row[j]:.1f}%" for j in top)
        assert want in text
        # the panel sits above the text, never over a token
        box = pg.page.evaluate("""() => {
            const v = Array.from(Bokeh.index.all_views()).find(v => v.model.name === 'saliency_details');
            return v.el.getBoundingClientRect().bottom; }""")
        top_of_text = min(b[1] for b in _geometry(pg)[0])
        assert box <= top_of_text
        # a tap keeps the token selected after the mouse leaves
        pg.click("saliency", xs[i], ys[i])
        pg.page.mouse.move(5, 5)
        pg.page.wait_for_timeout(300)
        assert f"Position {i} (generated token" in pg.text_of("saliency_details")
        assert pg.data("saliency_tokens", "line_width")[i] == 3
    finally:
        pg.close()


def test_views_fit_a_1400px_page_at_30_layers_by_40_tokens(browser, synthetic, tmp_path):
    expl = synthetic(n_layers=30, n_prompt=10, n_gen=40)
    path = expl.report(tmp_path / "big.html", factors=3)
    pg = _open(browser, path)
    try:
        widths = pg.page.evaluate("""() => {
            const w = {};
            for (const v of Bokeh.index.all_views())
                if (v.model.name) w[v.model.name] = v.el.getBoundingClientRect().right;
            w.page = document.documentElement.scrollWidth;
            return w; }""")
        for name in ("rankings_view", "layer_predictions_view", "watch_view", "saliency_view", "factors_view",
                     "factor_text", "sparklines", "saliency", "activations", "ranks_text", "page"):
            assert widths[name] <= 1400, (name, widths[name])
        # token labels on top of the grid, and every cell number readable on its colour
        assert pg.page.evaluate("() => Bokeh.documents[0].get_model_by_name('rankings').x_axis_location") == "above" \
            or pg.page.evaluate("() => Bokeh.documents[0].get_model_by_name('rankings').above.length") > 0
        fills, colors = pg.data("rankings_cells", "fill"), pg.data("rankings_cells", "color")
        assert min(contrast(rgb(f), rgb(c)) for f, c in zip(fills, colors)) >= 4.5
        assert pg.data("rankings_cells", "rank") == expl.rankings().ravel().tolist()
        assert len(pg.data("watch_0_cells", "rank")) == 30 * 40  # every generated position
    finally:
        pg.close()


def test_layer_predictions_follow_the_chosen_position(browser, synthetic, tmp_path):
    expl = synthetic(n_layers=6, n_prompt=5, n_gen=4, k=5)
    pg = _open(browser, expl.report(tmp_path / "lp.html", factors=2))
    try:
        def shown(pos):
            return [expl.top_tokens[l][pos][j] for l in range(6) for j in range(5)]
        from lens.viz.style import label
        assert pg.data("layer_predictions_cells", "text") == [label(t) for t in shown(4)]  # predicts the 1st generated
        pg.choose("position_select", "2")
        assert pg.data("layer_predictions_cells", "text") == [label(t) for t in shown(2)]
        p = expl.top_probs[:, 2, :].ravel()
        assert pg.data("layer_predictions_cells", "prob") == [f"{v:.0%}" if v >= 0.005 else "<1%" for v in p]
        from lens.viz.logit_lens import PROB_PALETTE, PROB_TEXT
        shade = np.rint(255 * p).astype(int)
        assert pg.data("layer_predictions_cells", "fill") == [PROB_PALETTE[c] for c in shade]
        assert pg.data("layer_predictions_cells", "color") == [PROB_TEXT[c] for c in shade]
    finally:
        pg.close()


@pytest.mark.parametrize("options,layer,why", [({"layers": (1, 1)}, 1, "the last of the layers factorised"),
                                               ({"layers": (0, 1), "heatmap_layer": 0}, 0, "as asked"),
                                               ({}, 1, "the middle layer")])
def test_heatmap_follows_the_layer_option(browser, tiny_explainer, tmp_path, options, layer, why):
    expl = tiny_explainer.explain("1, 2, 3, 4,", max_new_tokens=6)
    pg = _open(browser, expl.report(tmp_path / "h.html", factors=2, heatmap_neurons=20, **options))
    try:
        title = pg.page.evaluate("() => Bokeh.documents[0].get_model_by_name('activations').title.text")
        assert title.startswith(f"Layer {layer} ({why}") and ": the 20 most active" in title
        neurons = pg.data("heatmap_cells", "neuron")
        assert {n.split(".")[0] for n in neurons} == {str(layer)}
        values = np.asarray(pg.data("heatmap_cells", "value")).reshape(20, expl.n_tokens)
        idx = [int(n.split(".")[1]) for n in neurons[::expl.n_tokens]]
        np.testing.assert_allclose(values, np.maximum(expl.activations[layer][:, idx].T, 0), atol=1e-3)
        assert len(set(pg.data("heatmap_cells", "cluster"))) > 1
    finally:
        pg.close()


def test_the_report_passes_bokehs_checks(prompt_report):
    """Serialising skips Bokeh's document checks (they only log, at ~30 % of the time), so they run
    here: no error and no warning on any model of the report; the setting is restored afterwards."""
    from bokeh.core.validation.check import check_integrity
    from bokeh.settings import settings

    from lens.viz.report import report_html, report_layout
    expl, _ = prompt_report
    issues = check_integrity(report_layout(expl, factors=3).references())
    assert issues.error == [] and issues.warning == []
    report_html(expl, factors=3)
    assert settings.perform_document_validation() is True


def test_ranks_in_the_text_draw_each_tokens_ranks(synthetic, tmp_path):
    """Under token i, its rank after each layer (ranks[:, i - 1]: where the position before predicts it) on a
    log scale from rank 1 at the top of the band to 1000 and beyond at its bottom, layer 1 at the left;
    drawn again in green from the layer on which it stays rank 1."""
    from lens.viz.logit_lens import SETTLED_COLOR, SPARK_BOTTOM, SPARK_TOP
    from references import report_sources

    expl = synthetic(n_layers=6, n_prompt=5, n_gen=4)
    expl.ranks[:, 3] = [500, 40, 1, 3, 1, 1]                     # token 4: rank 1 from layer 5 on
    expl.ranks[:, 7] = [2000, 9, 1, 1, 1, 1]                     # token 8: from layer 3; 2000 sits at the floor
    drawn = report_sources(expl.report(tmp_path / "r.html", factors=2).read_text())
    lines, tokens = drawn["rank_sparklines"], drawn["ranks_text_tokens"]
    assert sorted(set(lines["token_index"])) == list(range(1, expl.n_tokens))
    for i, settled_from in ((4, 4), (8, 2)):
        rows = [k for k, t in enumerate(lines["token_index"]) if t == i]
        whole = rows[0]
        y0 = tokens["y"][i]
        want = [y0 - SPARK_TOP - (SPARK_BOTTOM - SPARK_TOP) * np.log(min(r, 1000)) / np.log(1000)
                for r in expl.ranks[:, i - 1]]
        np.testing.assert_allclose(lines["ys"][whole], want)
        assert lines["xs"][whole] == sorted(lines["xs"][whole])                    # layer 1 at the left
        assert lines["color"][rows[1]] == SETTLED_COLOR
        np.testing.assert_allclose(lines["ys"][rows[1]], want[settled_from:])
    assert tokens["ranks"][4] == "500 40 1 3 1 1" and tokens["settled"][4] == "rank 1 from layer 5"


def test_every_figure_can_be_saved_as_png(synthetic):
    """Papers need the views as images: every figure of the report carries Bokeh's save tool, the only
    button its toolbar shows (hover and tap need none)."""
    from bokeh.models import Plot, SaveTool

    expl = synthetic(n_layers=4, n_prompt=5, n_gen=4)
    plots = list(expl.layout(factors=2).select({"type": Plot}))
    assert len(plots) >= 6
    for p in plots:
        saves = [t for t in p.tools if isinstance(t, SaveTool)]
        assert len(saves) == 1 and saves[0].visible and p.toolbar_location is not None, p.name
        assert all(not t.visible for t in p.tools if not isinstance(t, SaveTool)), p.name


def test_one_display_rule_and_the_small_fixes(synthetic):
    """Tokens read the same in every view (a leading space and an indent marked); a grid of few columns
    widens to its title; the sparkline tooltip sits right of the point (it covered the factors' labels);
    each heatmap band is keyed by its cluster's colour."""
    from bokeh.models import ColumnDataSource, HoverTool, Plot
    from bokeh.palettes import Category10_10

    from lens.viz.logit_lens import rank_grid
    from lens.viz.style import display, label

    assert [display(t) for t in (" Paris", "\n   ", "", "a\tb")] == ["␣Paris", "↵␣␣␣", "∅", "a⇥b"]
    expl = synthetic(n_layers=4, n_prompt=5, n_gen=2)
    expl.tokens[2] = "\n   "
    layout = expl.layout(factors=2)
    sources = {s.name: s for s in layout.select({"type": ColumnDataSource}) if s.name}
    assert sources["saliency_tokens"].data["text"] == [label(t) for t in expl.tokens] == \
        sources["factor_tokens"].data["text"]
    title = "Rank of each generated token after each layer (1 = the model's top choice)"
    grid = rank_grid(np.ones((4, 2), int), ["a", "b"], "g", title, "token")
    assert grid.frame_width >= 7.2 * len(title)
    plots = {p.name: p for p in layout.select({"type": Plot})}
    tips = [t for t in plots["sparklines"].tools if isinstance(t, HoverTool) and t.tooltips]
    assert [t.attachment for t in tips] == ["right"]
    key = next(r for r in plots["activations"].renderers if r.name == "cluster_key")
    cells = sources["heatmap_cells"].data
    per_row = cells["cluster"][::expl.n_tokens]                         # each heatmap row's cluster
    bands = [c for i, c in enumerate(per_row) if i == 0 or c != per_row[i - 1]]
    assert list(key.data_source.data["fill_color"]) == [Category10_10[(c - 1) % 10] for c in bands]


def test_causal_views_fit_the_page_and_show_their_numbers(browser, synthetic, tmp_path):
    """The what-if view, the causal factors and the patching page at SmolLM2's size (30 layers, 9 heads) by
    40 tokens: within 1,400 px, every cell number readable on its colour, the cells holding the numbers."""
    from lens.grad.patching import Patching
    from lens.viz.patching import save_patching

    rng = np.random.default_rng(0)
    expl = synthetic(n_layers=30, n_prompt=10, n_gen=40)
    expl.what_if = dict(interventions=["ablate neuron 3.7"], edits=[], forced=False,
                        original_ids=list(range(40)), original_tokens=expl.tokens[10:][::-1],
                        original_probabilities=rng.random(40).tolist(), original_text="",
                        unedited_probabilities=rng.random(40).tolist(),
                        unedited_ranks=rng.integers(1, 5000, size=(30, 40)).tolist())
    expl.causal_factors = (rng.normal(size=(3, 40)) * 0.2).astype(np.float32)
    f = expl.factors(3)
    expl.settings["causal_factors"] = {"k": 3, "layers": list(f.layers), "positions": f.positions.tolist()}
    n, L, H = 14, 30, 9
    res = Patching(1.5, -2.0, {"resid_pre": rng.normal(size=(L, n)), "z": rng.normal(size=(L, H)),
                               "mlp_post": rng.normal(size=(L, n))},
                   {"resid_pre": rng.normal(size=(L, n)), "z": rng.normal(size=(L, H)),
                    "mlp_post": rng.normal(size=(L, n))}, runs=L * (2 * n + H), model_name="synthetic",
                   clean_tokens=[" a"] * n, corrupted_tokens=[" a"] * (n - 1) + [" <b>x</b>"], answer=" a", foil=" b")
    for path, names in ((expl.report(tmp_path / "r.html", factors=3), ("what_if_view", "causal_factors_view")),
                        (save_patching(res, tmp_path / "p.html"), ("patching_view",))):
        pg = _open(browser, path)
        try:
            right = pg.page.evaluate("""() => { const w = {};
                for (const v of Bokeh.index.all_views()) if (v.model.name) w[v.model.name] = v.el.getBoundingClientRect().right;
                w.page = document.documentElement.scrollWidth; return w; }""")
            for name in (*names, "page"):
                assert right[name] <= 1400, (name, right[name])
            if "causal_factors_view" in names:
                assert np.allclose(pg.data("causal_factors_cells", "value"), expl.causal_factors.ravel(), atol=1e-6)
                assert pg.data("what_if_ranks_unedited_cells", "rank") == np.ravel(expl.what_if["unedited_ranks"]).tolist()
                cells = "causal_factors_cells"
            else:
                assert np.allclose(pg.data("patching_z_cells", "value"), res.exact["z"].ravel())
                assert np.allclose(pg.data("attribution_patching_mlp_post_cells", "value"), res.estimate["mlp_post"].ravel())
                header = pg.page.evaluate("() => Bokeh.documents[0].get_model_by_name('patching_header').text")
                assert "&lt;b&gt;x&lt;/b&gt;" in header and "<b>x</b>" not in header  # a token is text, not markup
                cells = "patching_resid_pre_cells"
            fills, colors = pg.data(cells, "fill"), pg.data(cells, "color")
            assert min(contrast(rgb(a), rgb(b)) for a, b in zip(fills, colors)) >= 4.5
        finally:
            pg.close()
