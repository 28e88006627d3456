"""The report and the server app in a real headless Chromium (Debian's package, driven by Playwright):
real mouse hovers, offline, and untrusted token text that must stay text."""
from __future__ import annotations


import numpy as np
import pytest

from browser import Page, serve_process

pytestmark = pytest.mark.browser
XSS = "</script><img src=x onerror=alert(1)><script>alert(2)</script> Shakespeare was born in"


@pytest.fixture(scope="module")
def report(tiny_explainer, tmp_path_factory):
    expl = tiny_explainer.explain(XSS, max_new_tokens=6, methods=("grad_x_input", "integrated_gradients"),
                                  watch=[" is"])
    path = tmp_path_factory.mktemp("report") / "report.html"
    expl.report(path, factors=3)
    return expl, path


@pytest.fixture
def opened(browser, report):
    pg = Page(browser)
    pg.page.goto(report[1].as_uri())
    pg.page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && Array.from(Bokeh.index.all_views()).length > 5")
    yield pg
    pg.close()


def test_report_opens_offline_without_errors_or_requests(opened):
    assert all(u.startswith(("file:", "data:", "blob:")) for u in opened.requests), opened.requests
    assert not [m for m in opened.console if m[0] in ("error", "pageerror")], opened.console


def test_hovering_a_generated_token_paints_its_inputs(opened, report):
    expl = report[0]
    xs, ys = opened.data("saliency_tokens", "x"), opened.data("saliency_tokens", "y")
    for t in (0, expl.n_generated - 1):
        i = expl.n_prompt + t
        opened.hover("saliency", xs[i], ys[i])
        row = expl.attributions["grad_x_input"][t]
        alpha = np.asarray(opened.data("saliency_tokens", "alpha"))
        np.testing.assert_allclose(alpha[:i], 0.85 * row[:i] / row[:i].max(), atol=1e-4)
        assert (alpha[i:] == 0).all()
        # on screen: the most attributed token is darker than the least attributed one
        hi, lo = int(np.argmax(row[:i])), int(np.argmin(row[:i]))
        assert opened.pixel("saliency", xs[hi], ys[hi]).sum() < opened.pixel("saliency", xs[lo], ys[lo]).sum() - 60
        pct = opened.data("saliency_tokens", "pct")
        assert pct[hi].endswith("%") and abs(float(pct[hi][:-1]) - 100 * row[hi]) <= 0.51


def test_method_select_switches_the_attribution(opened, report):
    expl = report[0]
    xs, ys = opened.data("saliency_tokens", "x"), opened.data("saliency_tokens", "y")
    i = expl.n_tokens - 1
    opened.hover("saliency", xs[i], ys[i])
    assert "(grad_x_input)" in opened.text_of("saliency_title")
    opened.choose("method_select", "integrated_gradients")
    row = expl.attributions["integrated_gradients"][-1]
    alpha = np.asarray(opened.data("saliency_tokens", "alpha"))
    np.testing.assert_allclose(alpha[:i], 0.85 * row[:i] / row[:i].max(), atol=1e-4)
    # the title and the details name the method now selected
    assert "(integrated_gradients)" in opened.text_of("saliency_title")
    assert "(integrated_gradients)" in opened.text_of("saliency_details")
    # its first position is blank, and the panel says why
    assert alpha[0] == 0 and "held fixed along the path" in opened.text_of("saliency_details")


def _factor_alpha(expl, f, k):
    """The article's colouring of factor k: a prompt token by its own position, a generated token
    by the position before; the first position (left out of the factorisation) greyed, alpha 1."""
    act = f.token_factors[:, k] / f.token_factors[f.positions, k].max()
    source = [i if i < expl.n_prompt else i - 1 for i in range(expl.n_tokens)]
    return np.asarray([1.0 if s == 0 else 0.9 * act[s] for s in source])


def test_sparklines_isolate_restore_and_pin(opened, report):
    expl = report[0]
    f = expl.factors(3)
    dominant = opened.data("factor_tokens", "color")
    for k in range(3):
        opened.hover("sparklines", expl.n_tokens // 2, k + 0.5)
        colors = opened.data("factor_tokens", "color")
        assert colors[0] == "#d9d9d9" and len(set(colors[1:])) == 1  # the left-out first position greyed
        np.testing.assert_allclose(opened.data("factor_tokens", "alpha"), _factor_alpha(expl, f, k), atol=1e-4)
    # leaving restores each token's dominant factor
    opened.page.mouse.move(5, 5)
    opened.page.wait_for_timeout(300)
    assert opened.data("factor_tokens", "color") == dominant
    # a tap pins factor 1: leaving keeps it, until a second tap unpins it
    opened.click("sparklines", expl.n_tokens // 2, 1.5)
    opened.page.mouse.move(5, 5)
    opened.page.wait_for_timeout(300)
    np.testing.assert_allclose(opened.data("factor_tokens", "alpha"), _factor_alpha(expl, f, 1), atol=1e-4)
    opened.click("sparklines", expl.n_tokens // 2, 1.5)
    opened.page.mouse.move(5, 5)
    opened.page.wait_for_timeout(300)
    assert opened.data("factor_tokens", "color") == dominant


def test_the_colouring_toggle_switches_to_own_positions(opened, report):
    """The article colours a generated token by the position that produced it; the toggle colours every
    token by its own position, the text and the sparklines alike."""
    expl = report[0]
    f = expl.factors(3)
    opened.page.evaluate("() => { Bokeh.documents[0].get_model_by_name('factor_colouring').active = 1; }")
    opened.page.wait_for_timeout(300)
    opened.click("sparklines", expl.n_tokens // 2, 1.5)                  # pin factor 2
    own = f.token_factors[:, 1] / f.token_factors[f.positions, 1].max()
    want = np.where(np.arange(expl.n_tokens) == 0, 1.0, 0.9 * own)     # the left-out first position greyed
    np.testing.assert_allclose(opened.data("factor_tokens", "alpha"), want, atol=1e-4)
    ys = opened.page.evaluate("() => Bokeh.documents[0].get_model_by_name('sparkline_lines').data.ys[1]")
    np.testing.assert_allclose(np.asarray(ys[1:], float), 1 + 0.9 - 0.8 * own[1:], atol=1e-6)
    opened.page.evaluate("() => { Bokeh.documents[0].get_model_by_name('factor_colouring').active = 0; }")
    opened.page.wait_for_timeout(300)
    np.testing.assert_allclose(opened.data("factor_tokens", "alpha"), _factor_alpha(expl, f, 1), atol=1e-4)
    opened.click("sparklines", expl.n_tokens // 2, 1.5)                  # unpin


def test_untrusted_tokens_stay_text(opened, report):
    expl = report[0]
    assert opened.dialogs == []
    dom = opened.page.evaluate("() => [document.querySelectorAll('img').length, "
                               "Array.from(document.scripts).filter(s => s.textContent.includes('alert(2)')"
                               " && s.type !== 'application/json').length]")
    assert dom == [0, 0]
    assert "".join(opened.data("saliency_tokens", "token")) == expl.text
    assert opened.text_of("header").count("</script><img src=x onerror=alert(1)>") == 1  # shown as text
    header = opened.page.evaluate("() => Bokeh.documents[0].get_model_by_name('header').text")
    assert "&lt;/script&gt;&lt;img" in header and "<img" not in header


@pytest.fixture(scope="module")
def server(tiny):
    proc, url = serve_process(tiny[1], max_new_tokens=8, max_prompt_tokens=20)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _explain_in_browser(pg, url, prompt):
    pg.page.goto(url)
    pg.page.wait_for_selector("textarea")
    pg.page.fill("textarea", prompt)
    pg.page.dispatch_event("textarea", "change")
    pg.page.click("button:has-text('Explain')")
    pg.page.wait_for_function("() => { const s = Bokeh.documents[0].get_model_by_name('status').text;"
                              " return s.includes('lens-done') || s.includes('lens-error'); }", timeout=120_000)
    return pg.page.evaluate("() => Bokeh.documents[0].get_model_by_name('status').text")


def test_server_answers_an_explain_request(browser, server, tiny_explainer):
    pg = Page(browser, offline=False)
    try:
        status = _explain_in_browser(pg, server, "The capital of France is")
        import html
        want = tiny_explainer.explain("The capital of France is", max_new_tokens=8)  # the default, capped
        assert "lens-done" in status and html.escape(want.text) in status
        pg.page.wait_for_function("() => Array.from(Bokeh.index.all_views()).some(v => v.model.name === 'saliency')")
        assert "".join(pg.data("saliency_tokens", "token")) == want.text
        assert all(u.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")) for u in pg.requests)
        # a bad request is reported to that session, and the server keeps serving
        status = _explain_in_browser(pg, server, "word " * 40)
        assert "lens-error" in status and "at most 20" in status
        assert "lens-done" in _explain_in_browser(pg, server, "Hello")
    finally:
        pg.close()


def test_markup_inside_one_token_stays_text_in_the_details(browser, report, tmp_path):
    """Byte-level BPE splits markup into harmless pieces, so give one token the whole payload, as a
    different tokenizer could, and hover it: the details panel must show it as text."""
    import dataclasses

    expl = report[0]
    payload = "<img src=x onerror=alert(3)>"
    tokens = list(expl.tokens)
    tokens[expl.n_prompt] = payload
    path = dataclasses.replace(expl, tokens=tokens).report(tmp_path / "one.html", factors=2)
    pg = Page(browser)
    try:
        pg.page.goto(path.as_uri())
        pg.page.wait_for_function("() => window.Bokeh && Array.from(Bokeh.index.all_views()).length > 5")
        xs, ys = pg.data("saliency_tokens", "x"), pg.data("saliency_tokens", "y")
        pg.hover("saliency", xs[expl.n_prompt], ys[expl.n_prompt])
        shown = pg.page.evaluate("""() => { const out = [];
            const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot);
                                  for (const c of n.children || []) walk(c);
                                  if (n.tagName === 'IMG') out.push('IMG');
                                  if (n.textContent && n.textContent.includes('onerror=alert(3)') && !n.children.length) out.push(n.textContent); };
            walk(document.body); return out; }""")
        assert f'"{payload}"' in shown and "IMG" not in shown, shown
        assert payload in pg.text_of("saliency_details")
        assert pg.dialogs == []
    finally:
        pg.close()


def test_view_javascript_parses_and_its_colour_rule_is_pythons(browser):
    """Every file of lens/viz/js compiles in Chromium (as CustomJS compiles it: a function body), and
    colors.js's textColor gives what style.text_color gives on fills across the colour cube."""
    from lens.viz.style import JS_DIR, js, text_color

    pg = Page(browser)
    try:
        pg.page.set_content("<html><body></body></html>")
        names = sorted(p.stem for p in JS_DIR.glob("*.js"))
        assert {"colors", "saliency", "factors", "layer_predictions", "unit_select"} <= set(names)
        for name in names:
            error = pg.page.evaluate("code => { try { new Function(code); return null } catch (e) { return String(e) } }",
                                     js(name))
            assert error is None, (name, error)
        fills = [[r, g, b] for r in range(0, 256, 51) for g in range(0, 256, 51) for b in range(0, 256, 17)]
        got = pg.page.evaluate("([code, fills]) => new Function('fills', code + '; return fills.map(textColor)')(fills)",
                               [js("colors"), fills])
        assert got == [text_color(tuple(f)) for f in fills]
    finally:
        pg.close()
