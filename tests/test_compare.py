"""Two explanations side by side (`Explanation.compare`, `lens compare`): token alignment, the pairs and
their disagreement against a direct computation, the page in Chromium, the command's errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lens.analysis.compare import align_runs, align_tokens


def test_alignment_pairs_equal_runs_and_replacements():
    a = ["The", " capital", " of", " France", " is", " Paris", "."]
    b = ["The", " capital", " of", " Italy", " is", " Rome"]
    np.testing.assert_array_equal(align_tokens(a, b), [0, 1, 2, 3, 4, 5, -1])
    c = ["The", " big", " capital", " of", " France"]                        # an insertion: nothing pairs with it
    np.testing.assert_array_equal(align_tokens(c, a[:5]), [0, -1, 1, 2, 3])
    np.testing.assert_array_equal(align_tokens(a, a), np.arange(len(a)))
    # generated tokens pair by step, whatever they say: " Paris" "." after A's prompt with " Rome" after B's
    np.testing.assert_array_equal(align_runs(a, 5, b[:5] + [" Rome"], 5), [0, 1, 2, 3, 4, 5, -1])
    np.testing.assert_array_equal(align_runs(c + ["!", "?"], 5, a, 5), [0, -1, 1, 2, 3, 5, 6])


@pytest.fixture(scope="module")
def runs(tiny_explainer):
    a = tiny_explainer.explain("William Shakespeare was born in the year", max_new_tokens=5,
                               methods=("grad_x_input", "gradient"))
    b = tiny_explainer.explain("Charles Dickens was born in the year", max_new_tokens=5)
    return a, b


def test_two_methods_of_one_run(runs):
    a, _ = runs
    cmp = a.compare(a, "grad_x_input", "gradient")
    np.testing.assert_array_equal(cmp.rows, np.arange(a.n_prompt, a.n_tokens))
    x, y = a.attributions["grad_x_input"], a.attributions["gradient"]
    np.testing.assert_allclose(cmp.a_scores, x)
    np.testing.assert_allclose(cmp.b_scores, y)
    np.testing.assert_allclose(cmp.disagreement, 0.5 * np.abs(x - y).sum(1), atol=1e-6)
    assert list(cmp.order()) == list(np.argsort(-cmp.disagreement, kind="stable"))
    assert cmp.names == ("tiny · grad_x_input", "tiny · gradient")
    assert (a.compare(a).disagreement == 0).all()


def test_two_prompts(runs):
    a, b = runs
    cmp = a.compare(b)
    shift = len(b.tokens) - len(a.tokens)
    for i, r in enumerate(cmp.rows):                                    # every pair: A's row against B's, moved
        j = cmp.align[r]
        assert j >= b.n_prompt and (a.tokens[r] == b.tokens[j]) == cmp.same_token[i]
        shared = np.flatnonzero(cmp.align[:r] >= 0)
        np.testing.assert_allclose(cmp.b_scores[i, shared], b.attributions["grad_x_input"][j - b.n_prompt][cmp.align[shared]])
        p = cmp.a_scores[i] * (cmp.align >= 0)
        q = cmp.b_scores[i]
        want = 0.5 * np.abs(p / p.sum() - q / q.sum()).sum()
        assert cmp.disagreement[i] == pytest.approx(want, abs=1e-9)
    assert abs(shift) < 3 and len(cmp.rows) >= 3
    pairs = cmp.to_dict()["pairs"]
    assert [p["disagreement"] for p in pairs] == sorted((p["disagreement"] for p in pairs), reverse=True)


def test_lens_compare_writes_the_page_and_json(runs, cli, tmp_path):
    a, b = runs
    fa, fb = a.save(tmp_path / "a.npz"), b.save(tmp_path / "b.npz")
    rc, out, err = cli("compare", fa, fb, "-o", tmp_path / "c.html", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["page"] == str(tmp_path / "c.html") and len(data["pairs"]) == len(a.compare(b).rows)
    page = (tmp_path / "c.html").read_text()
    assert "lens compare" in page and "compare_diff_tokens" in page
    rc, out, err = cli("compare", fa, fa, "--method", "grad_x_input", "--other-method", "gradient", "-o", tmp_path / "m.html")
    assert rc == 0 and "grad_x_input" in out and "gradient" in out, err


@pytest.mark.parametrize("args,fragment", [
    (["{a}", "{b}", "--method", "attnlrp"], "has no 'attnlrp' attribution"),
    (["{a}", "{b}", "-o", "{a}"], "would overwrite an explanation it compares"),
    (["{a}", "{tmp}/missing.npz"], "does not exist"),
])
def test_lens_compare_refuses_bad_input(runs, cli, tmp_path, args, fragment):
    a, b = runs
    fa, fb = a.save(tmp_path / "a.npz"), b.save(tmp_path / "b.npz")
    rc, out, err = cli("compare", *[x.format(a=fa, b=fb, tmp=tmp_path) for x in args])
    assert rc == 2 and "Traceback" not in err and fragment in err.strip().splitlines()[-1], err
    assert fa.read_bytes()[:2] == b"PK"                                  # nothing overwritten


@pytest.mark.browser
def test_the_page_paints_the_most_disagreeing_pair(runs, browser, tmp_path):
    from browser import Page
    from lens.viz.compare import save_comparison

    a, b = runs
    cmp = a.compare(b)
    path = save_comparison(cmp, tmp_path / "c.html")
    pg = Page(browser)
    try:
        pg.page.goto(path.as_uri())
        pg.page.wait_for_function("() => window.Bokeh && Array.from(Bokeh.index.all_views()).length > 5")
        pg.page.wait_for_timeout(500)
        i = int(cmp.order()[0])
        r = int(cmp.rows[i])
        alpha = np.asarray(pg.data("compare_a_tokens", "alpha"))
        row = cmp.a_scores[i]
        np.testing.assert_allclose(alpha[:r], 0.85 * row[:r] / row[:r].max(), atol=1e-4)
        delta = (cmp.a_scores[i] - cmp.b_scores[i])[:r]
        diff = np.asarray(pg.data("compare_diff_tokens", "alpha"))
        np.testing.assert_allclose(diff[:r], 0.85 * np.abs(delta) / np.abs(delta).max(), atol=1e-4)
        assert not [m for m in pg.console if m[0] in ("error", "pageerror")], pg.console
    finally:
        pg.close()
