"""Untrusted text in real Chromium: 35 payloads (script tags, event handlers, javascript: URLs,
</script> inside embedded JSON, TeX with \\href and \\style, SVG/MathML mutation tricks, template
injection, bidi and zero-width characters, a 5,000-character token) as prompts, as generated
tokens, as top-k candidates, as watched tokens, as a model and a method name, and inside a
hand-crafted .npz given to `lens render`. Every token is hovered and the page clicked all over:
nothing runs, no request leaves, MathJax never loads, and the text is shown as text."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lens.cli import main
from browser import Page

pytestmark = pytest.mark.browser

PAYLOADS = [
    "<script>window.__pwned.push(1)</script>",
    '<img src=x onerror="window.__pwned.push(2)">',
    '"><svg onload=window.__pwned.push(3)>',
    "javascript:window.__pwned.push(4)",
    '<a href="javascript:window.__pwned.push(5)">click me</a>',
    "</script><script>window.__pwned.push(6)</script>",
    "$$\\href{javascript:window.__pwned.push(7)}{\\style{opacity:0}{\\rule{1500px}{1500px}}}$$",
    "\\(\\href{javascript:window.__pwned.push(8)}{x}\\)",
    "\\[\\href{javascript:window.__pwned.push(9)}{x}\\]",
    "$$\\style{background:red}{\\text{styled}}$$",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__pwned.push(11)>",
    "<svg><p><style><img src=x onerror=window.__pwned.push(12)></style></p></svg>",
    '<noscript><p title="</noscript><img src=x onerror=window.__pwned.push(13)>">',
    '<iframe src="javascript:window.__pwned.push(14)"></iframe>',
    "<body onload=window.__pwned.push(15)>",
    "<details open ontoggle=window.__pwned.push(16)>",
    "<input autofocus onfocus=window.__pwned.push(17)>",
    "{{constructor.constructor('window.__pwned.push(18)')()}}",
    "${window.__pwned.push(19)}",
    "'); window.__pwned.push(20); ('",
    '"; window.__pwned.push(21); "',
    "\u202egnp.exe\u202c bidi",
    "a\u200b\u200c\u200d\ufeffb zero-width",
    "<style>*{display:none}</style>",
    "<link rel=stylesheet href=http://127.0.0.1:9/x.css>",
    '<meta http-equiv=refresh content="0;url=javascript:window.__pwned.push(26)">',
    '<object data="javascript:window.__pwned.push(27)"></object>',
    "A" * 5000,
    "&lt;script&gt;window.__pwned.push(29)&lt;/script&gt;",
    "</textarea><script>window.__pwned.push(30)</script>",
    '<base href="javascript:window.__pwned.push(31)//">',
    "@import url(http://127.0.0.1:9/x.css);",
    "\\x3cscript\\x3ewindow.__pwned.push(33)\\x3c/script\\x3e",
    "<form><button formaction=javascript:window.__pwned.push(34)>x</button></form>",
    "data:text/html,<script>window.__pwned.push(35)</script>",
]


def _attack(browser, path):
    """Open the report, hover every token and sparkline row, click all over; return the page."""
    pg = Page(browser)
    pg.ctx.add_init_script("window.__pwned = []; window.alert = window.confirm = window.prompt = "
                           "(m) => window.__pwned.push('dialog:' + m);")
    pg.page = pg.ctx.new_page()
    for event, log in (("request", pg.requests), ("console", pg.console), ("dialog", pg.dialogs)):
        pg.page.on(event, (lambda log: lambda x: log.append(getattr(x, "url", getattr(x, "text", x))))(log))
    pg.page.on("pageerror", lambda e: pg.console.append(("pageerror", str(e))))
    pg.page.goto(path.as_uri())
    pg.page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                              "Array.from(Bokeh.index.all_views()).length > 5")
    for source, plot in (("saliency_tokens", "saliency"), ("factor_tokens", "factor_text")):
        xs, ys = pg.data(source, "x"), pg.data(source, "y")
        pg.page.evaluate(f"() => Array.from(Bokeh.index.all_views()).find(v => v.model.name === '{plot}')"
                         ".el.scrollIntoView()")
        for x, y in zip(xs, ys):
            pg.page.mouse.move(*pg.screen_xy(plot, x, y))
        pg.click(plot, xs[-1], ys[-1])
    height = pg.page.evaluate("() => document.documentElement.scrollHeight")
    for y in range(0, height, 400):  # click across the whole page
        pg.page.evaluate(f"() => window.scrollTo(0, {y})")
        for x in range(20, 1400, 270):
            for dy in (60, 260):
                pg.page.mouse.click(x, dy)
    pg.page.wait_for_timeout(300)
    return pg


def _assert_nothing_ran(pg, shown_texts):
    assert pg.page.evaluate("() => window.__pwned") == [] and pg.dialogs == []
    assert all(u.startswith(("file:", "data:", "blob:")) for u in pg.requests), pg.requests
    assert not [m for m in pg.console if m[0] == "pageerror"], pg.console
    injected = pg.page.evaluate("""() => { const out = [];
        const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot);
            for (const c of n.children || []) walk(c);
            const tag = (n.tagName || '').toUpperCase();
            if (['IMG', 'IFRAME', 'OBJECT', 'MATH', 'FORM', 'BASE', 'DETAILS', 'TEXTAREA', 'NOSCRIPT'].includes(tag)) out.push(tag);
            if (tag === 'META' && n.getAttribute('http-equiv')) out.push('META refresh');
            if (tag === 'SVG' && n.getAttribute('onload')) out.push('SVG onload');
            if (tag === 'A' && (n.getAttribute('href') || '').startsWith('javascript')) out.push('A javascript');
            if (tag === 'SCRIPT' && n.type !== 'application/json' && n.textContent.includes('__pwned')) out.push('SCRIPT');
            if (tag === 'SCRIPT' && n.type === 'application/json') { try { JSON.parse(n.textContent) } catch (e) { out.push('broken JSON') } }
            if (tag.startsWith('MJX')) out.push(tag); };
        walk(document.documentElement); return out; }""")
    assert injected == [], injected
    assert pg.page.evaluate("() => typeof window.MathJax") == "undefined"
    header = pg.text_of("header")
    for text in shown_texts:
        assert text in header, text[:60]


@pytest.mark.parametrize("chunk", range(0, len(PAYLOADS), 5))
def test_payloads_as_prompts(browser, tiny_explainer, tmp_path, chunk):
    """Through the real tokenizer and model: the payloads become the prompt."""
    prompt = " ".join(p[:300] for p in PAYLOADS[chunk:chunk + 5])
    if len(tiny_explainer.model.encode(prompt)) > 120:
        prompt = " ".join(p[:60] for p in PAYLOADS[chunk:chunk + 5])
    expl = tiny_explainer.explain(prompt, max_new_tokens=3)
    pg = _attack(browser, expl.report(tmp_path / "r.html", factors=2))
    try:
        _assert_nothing_ran(pg, [prompt])
    finally:
        pg.close()


def test_payloads_as_every_string_of_a_crafted_file(browser, tiny_explainer, tmp_path, capsys):
    """A shared .npz is untrusted: every string in it a payload, rendered by `lens render`."""
    expl = tiny_explainer.explain("one two three four five six seven eight", max_new_tokens=30)
    n, L, k = expl.n_tokens, expl.n_layers, expl.top_ids.shape[-1]
    tokens = [PAYLOADS[i % len(PAYLOADS)] for i in range(n)]
    method = PAYLOADS[6]
    crafted = dataclasses.replace(
        expl, model_name=PAYLOADS[0], tokens=tokens, prompt_text="".join(tokens[:expl.n_prompt]),
        generated_text="".join(tokens[expl.n_prompt:]),
        attributions={method: expl.attributions["grad_x_input"], "grad_x_input": expl.attributions["grad_x_input"]},
        top_tokens=[[[PAYLOADS[(l + i + j) % len(PAYLOADS)] for j in range(k)] for i in range(n)] for l in range(L)],
        watched={PAYLOADS[7]: expl.ranks, PAYLOADS[1]: expl.ranks},
        settings=dict(expl.settings, watch_tokens={PAYLOADS[7]: [PAYLOADS[8], PAYLOADS[9]]}, foil=PAYLOADS[2]))
    saved = crafted.save(tmp_path / "crafted.npz")
    assert main(["render", str(saved), "-o", str(tmp_path / "r.html"), "--factors", "3"]) == 0
    pg = _attack(browser, tmp_path / "r.html")
    try:
        _assert_nothing_ran(pg, [PAYLOADS[0], crafted.prompt_text[:200]])
        # the method menu and the heading show the payload method name as text
        pg.choose("method_select", method)
        assert method in pg.text_of("saliency_title")
        _assert_nothing_ran(pg, [])
        assert np.asarray(pg.data("saliency_tokens", "alpha")).max() > 0
    finally:
        pg.close()


@pytest.fixture(scope="module")
def payload_model(tiny, tmp_path_factory):
    """A model folder is untrusted too: its tokenizer's every token a payload (a word-level vocabulary
    over the model's 50,257 ids, one token per invisible separator U+2063), so the prompt, every
    generated token and every top-k candidate is one. (folder, words of a prompt)."""
    import json
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers

    from lens.store import sha256

    folder = tmp_path_factory.mktemp("payload") / "payload-vocab"
    shutil.copytree(tiny[1], folder)
    n_vocab = json.loads((folder / "manifest.json").read_text())["d_vocab"]
    vocab = {f"{PAYLOADS[i % len(PAYLOADS)]}#{i}": i for i in range(n_vocab)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=next(iter(vocab))))
    tok.pre_tokenizer = pre_tokenizers.Split("\u2063", "removed")
    tok.save(str(folder / "tokenizer.json"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["tokenizer.json"] = {"size": (folder / "tokenizer.json").stat().st_size,
                                           "sha256": sha256(folder / "tokenizer.json")}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, [w for w, i in vocab.items() if i in range(100, 100 + 3 * len(PAYLOADS), 3)]


def test_a_vocabulary_of_payloads(browser, payload_model, tmp_path):
    """Every view of the report, with every token of the model a payload."""
    import lens

    folder, words = payload_model
    expl = lens.Explainer(lens.load(folder)).explain("\u2063".join(words), max_new_tokens=4)
    assert expl.tokens[:len(words)] == words  # the payloads are the tokens shown
    assert any("<" in t for t in expl.tokens[len(words):]) and any("<" in c for c in expl.top_tokens[0][0])
    pg = _attack(browser, expl.report(tmp_path / "r.html", factors=2))
    try:
        _assert_nothing_ran(pg, [words[0], words[5]])
    finally:
        pg.close()


def test_a_vocabulary_of_payloads_in_the_corpus_report(browser, payload_model, tmp_path):
    """`lens corpus` on that model: its report's neuron and factor contexts are payload tokens."""
    import subprocess
    import sys

    from browser import Page

    folder, words = payload_model
    (tmp_path / "p.txt").write_text("\n".join("\u2063".join(words[i:i + 6]) for i in range(0, len(words) - 6, 2)))
    p = subprocess.run([sys.executable, "-m", "lens", "corpus", "--model", str(folder), "--prompts",
                        str(tmp_path / "p.txt"), "--out", str(tmp_path / "out"), "--factors", "2", "--top-k", "3"],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    html_text = (tmp_path / "out" / "report.html").read_text()
    assert "onerror" in html_text  # the payloads are in the page (as data)
    pg = Page(browser)
    pg.ctx.add_init_script("window.__pwned = []; window.alert = window.confirm = window.prompt = "
                           "(m) => window.__pwned.push('dialog:' + m);")
    pg.page = pg.ctx.new_page()
    for event, log in (("request", pg.requests), ("dialog", pg.dialogs)):
        pg.page.on(event, (lambda log: lambda x: log.append(getattr(x, "url", x)))(log))
    errors: list = []
    pg.page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pg.page.goto((tmp_path / "out" / "report.html").as_uri())
        pg.page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0")
        for y in range(0, pg.page.evaluate("() => document.documentElement.scrollHeight"), 300):
            pg.page.evaluate(f"() => window.scrollTo(0, {y})")
            for x in range(20, 1400, 160):
                pg.page.mouse.move(x, 150)
                pg.page.mouse.click(x, 150)
        pg.page.wait_for_timeout(300)
        assert pg.page.evaluate("() => window.__pwned") == [] and pg.dialogs == [] and errors == []
        assert all(u.startswith(("file:", "data:", "blob:")) for u in pg.requests), pg.requests
    finally:
        pg.close()


def test_a_vocabulary_of_payloads_in_lens_serve(browser, payload_model):
    """`lens serve` on that model: a request whose prompt, output and candidates are payloads runs
    nothing in the page, and the server answers with the payloads as text."""
    from browser import Page, serve_process

    folder, words = payload_model
    proc, url = serve_process(folder, max_new_tokens=3, max_prompt_tokens=40)
    pg = Page(browser, offline=False)
    try:
        pg.page.add_init_script("window.__pwned = []; window.alert = (m) => window.__pwned.push(m);")
        pg.page.goto(url)
        pg.page.wait_for_selector("textarea")
        pg.page.fill("textarea", "\u2063".join(words[:8]))
        pg.page.dispatch_event("textarea", "change")
        pg.page.click("button:has-text('Explain')")
        pg.page.wait_for_function("() => { const s = Bokeh.documents[0].get_model_by_name('status').text;"
                                  " return s.includes('lens-done') || s.includes('lens-error'); }", timeout=180_000)
        status = pg.page.evaluate("() => Bokeh.documents[0].get_model_by_name('status').text")
        assert "lens-done" in status and "&lt;img src=x onerror" in status, status[:500]
        for y in (200, 500, 800, 1100):
            for x in range(20, 1400, 200):
                pg.page.mouse.move(x, y)
                pg.page.mouse.click(x, y)
        pg.page.wait_for_timeout(300)
        assert pg.page.evaluate("() => window.__pwned") == []
        assert not [m for m in pg.console if m[0] == "pageerror"], pg.console
    finally:
        pg.close()
        proc.kill()
