"""`lens serve` under load in real Chromium: 10 browser sessions at once, 3 requests each, in two
waves; no error, no session sees another's result, untrusted prompts stay text, memory flat across
waves, and SIGTERM stops the server cleanly."""
from __future__ import annotations

import html
import signal
import time

import numpy as np
import pytest

from browser import Page, serve_process

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SESSIONS, ROUNDS = 10, 3


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def server(tiny):
    proc, url = serve_process(tiny[1], max_new_tokens=4, max_prompt_tokens=40)
    yield proc, url
    if proc.poll() is None:
        proc.kill()


def _submit(pg, prompt):
    pg.page.fill("textarea", prompt)
    pg.page.dispatch_event("textarea", "change")
    pg.page.click("button:has-text('Explain')")


def _status(pg, timeout=180_000):
    pg.page.wait_for_function("() => { const s = Bokeh.documents[0].get_model_by_name('status').text;"
                              " return s.includes('lens-done') || s.includes('lens-error'); }", timeout=timeout)
    text = pg.page.evaluate("() => Bokeh.documents[0].get_model_by_name('status').text")
    pg.page.evaluate("() => { Bokeh.documents[0].get_model_by_name('status').text = 'waiting'; }")
    return text


def _wave(browser, url, tiny_explainer, wave):
    pages = [Page(browser, offline=False) for _ in range(SESSIONS)]
    try:
        for pg in pages:
            pg.page.add_init_script("window.__pwned = []")
            pg.page.goto(url)
            pg.page.wait_for_selector("textarea")
        for r in range(ROUNDS):
            prompts = [f"Session {i} of wave {wave}, round {r}: the capital of France is" for i in range(SESSIONS)]
            prompts[0] = "$$\\href{javascript:window.__pwned.push(1)}{\\rule{900px}{900px}}$$ is"
            prompts[1] = "<img src=x onerror=window.__pwned.push(2)> is"
            for pg, prompt in zip(pages, prompts):
                _submit(pg, prompt)
            for pg, prompt in zip(pages, prompts):
                status = _status(pg)
                want = tiny_explainer.explain(prompt, max_new_tokens=4).text
                assert "lens-done" in status and html.escape(want) in status, (prompt, status)  # its own result
                pg.page.mouse.click(300, 300)
                assert pg.page.evaluate("() => window.__pwned") == []
        for pg in pages:
            assert not [m for m in pg.console if m[0] in ("error", "pageerror")], pg.console
    finally:
        for pg in pages:
            pg.close()


def test_ten_sessions_three_requests_two_waves(browser, server, tiny_explainer):
    proc, url = server
    rss = []
    for wave in range(2):
        _wave(browser, url, tiny_explainer, wave)
        time.sleep(16)  # the server drops sessions 10 s after their browser left (checked every 5 s)
        rss.append(_rss_mb(proc.pid))
    assert rss[1] <= rss[0] + 60, rss  # flat: the second wave keeps nothing of the first
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    err = proc.stderr.read()
    assert "stopping (SIGTERM)" in err and "Traceback" not in err, err
    assert "EMPTY_LAYOUT" not in err


def test_a_request_takes_methods_factors_watched_tokens_and_chat(tiny_explainer):
    """The app's controls reach the explanation as the CLI's options do, and are checked the same way."""
    from bokeh.models import Plot

    from lens.errors import LensError
    from lens.serve import serve_request
    from lens.settings import ServeSettings

    limits = ServeSettings(max_new_tokens=4, max_prompt_tokens=40)
    expl, layout = serve_request(tiny_explainer, limits, "The capital of France is", 3, ["gradient", "attention_flow"],
                                 2, " Paris\n the\n", False)
    assert list(expl.attributions) == ["gradient", "attention_flow"] and list(expl.watched) == [" Paris", " the"]
    want = tiny_explainer.explain("The capital of France is", max_new_tokens=3, methods=("gradient",))
    assert (expl.attributions["gradient"] == want.attributions["gradient"]).all()
    sparks = [p for p in layout.select({"type": Plot}) if p.name == "sparklines"]
    assert len(sparks) == 1 and sparks[0].y_range.start == 2                 # 2 factors
    for args, fragment in (((3, ["lime"], 2, "", False), "unknown attribution method"),
                           ((3, ["grad_x_input"], 0, "", False), "factors must be between 1 and"),
                           ((9, ["grad_x_input"], 2, "", False), "new tokens must be between 1 and 4"),
                           ((3, ["grad_x_input"], 2, "", True), "chat template")):
        with pytest.raises(LensError, match=fragment):
            serve_request(tiny_explainer, limits, "The capital of France is", *args)


def test_the_apps_ablate_and_patch_controls_recompute_on_the_server(tiny_explainer):
    """The ablation boxes reach the explanation as `--ablate`/`--ablate-head` do (the what-if view in the
    layout), the patch button computes `lens patch`'s numbers, and bad input is refused by name."""
    from bokeh.models import Plot

    from lens import interventions as I
    from lens.errors import LensError
    from lens.serve import patch_request, serve_request
    from lens.settings import ServeSettings

    limits = ServeSettings(max_new_tokens=4, max_prompt_tokens=40)
    prompt = "The capital of France is"
    expl, layout = serve_request(tiny_explainer, limits, prompt, 3, ["grad_x_input"], 2, "", False, "1.5, 0.7", "1.2")
    want = tiny_explainer.explain(prompt, max_new_tokens=3, interventions=[
        I.ablate("blocks.1.mlp.hook_post", units=[5]), I.ablate("blocks.0.mlp.hook_post", units=[7]),
        I.ablate("blocks.1.attn.hook_z", units=[2])])
    assert expl.token_ids.tolist() == want.token_ids.tolist()
    assert np.array_equal(expl.attributions["grad_x_input"], want.attributions["grad_x_input"])
    assert expl.what_if["interventions"] == ["ablate neuron 1.5", "ablate neuron 0.7", "ablate head 1.2"]
    assert any(m.name == "what_if_view" for m in layout.select({"name": "what_if_view"}))
    clean, corrupt = "When Mary and John went to the store, John gave a drink to", \
        "When Mary and John went to the store, Mary gave a drink to"
    result, view = patch_request(tiny_explainer, limits, clean, corrupt, " Mary", " John")
    direct = tiny_explainer.patch(clean, corrupt, " Mary", " John")
    assert all(np.array_equal(result.exact[k], direct.exact[k]) for k in direct.exact)
    assert {p.name for p in view.select({"type": Plot})} >= {"patching_resid_pre", "attribution_patching_z"}
    for call, fragment in ((lambda: serve_request(tiny_explainer, limits, prompt, 3, [], 2, "", False, "1.999999"),
                            "neuron 999999 does not exist"),
                           (lambda: serve_request(tiny_explainer, limits, prompt, 3, [], 2, "", False, "", "9.1"),
                            "layer 9 does not exist"),
                           (lambda: patch_request(tiny_explainer, limits, "a b", "a b c", " a", " b"), "same length"),
                           (lambda: patch_request(tiny_explainer, limits, "word " * 60, "word " * 60, " a", " b"),
                            "at most 40")):
        with pytest.raises(LensError, match=fragment):
            call()


def test_the_patch_and_ablate_controls_in_a_browser(browser, tiny, tiny_explainer):
    """In the app: fill the clean prompt and the answers, press Patch: the heatmaps arrive with lens
    patch's numbers; ablate a neuron and press Explain: the what-if view arrives."""
    proc, url = serve_process(tiny[1], max_new_tokens=4, max_prompt_tokens=40)
    pg = Page(browser, offline=False)
    try:
        pg.page.goto(url)
        pg.page.wait_for_selector("textarea")
        clean, corrupt = "When Mary and John went to the store, John gave a drink to", \
            "When Mary and John went to the store, Mary gave a drink to"
        pg.page.evaluate("""([clean, corrupt]) => { const d = Bokeh.documents[0];
            d.get_model_by_name('prompt').value = corrupt; d.get_model_by_name('clean').value = clean;
            d.get_model_by_name('answer').value = ' Mary'; d.get_model_by_name('foil').value = ' John'; }""",
                         [clean, corrupt])
        pg.page.click("button:has-text('Patch')")
        assert "lens-done" in _status(pg)
        pg.page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('patching_z_cells') !== null")
        got = pg.data("patching_z_cells", "value")
        want = tiny_explainer.patch(clean, corrupt, " Mary", " John").exact["z"].ravel()
        assert np.allclose(got, want, atol=1e-5)
        pg.page.evaluate("() => { Bokeh.documents[0].get_model_by_name('ablate_neurons').value = '1.5, 0.7'; }")
        pg.page.click("button:has-text('Explain')")
        assert "lens-done" in _status(pg)
        pg.page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('what_if_table') !== null")
        table = pg.page.evaluate("() => Bokeh.documents[0].get_model_by_name('what_if_table').text")
        assert "ablate neuron 1.5; ablate neuron 0.7" in table
        assert not [m for m in pg.console if m[0] in ("error", "pageerror")], pg.console
    finally:
        pg.close()
        proc.kill()
