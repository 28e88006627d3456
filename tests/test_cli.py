"""`lens explain` and `lens render` end to end on a locally built tiny model."""
from __future__ import annotations

import html
import json

import numpy as np
import pytest

import lens
from references import report_models, report_sources


def _error(rc, err, fragment):
    assert rc == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lens: error:") and fragment in last, err


def test_explain_writes_report_and_explanation(cli, tiny, tmp_path):
    out, saved = tmp_path / "r.html", tmp_path / "e.npz"
    rc, stdout, err = cli("explain", "--model", tiny[1], "--prompt", "William Shakespeare was born in the year",
                          "--max-new-tokens", "5", "--watch", " is", "--factors", "3", "--layers", "0-1",
                          "-o", out, "--save", saved)
    assert rc == 0, err
    page = out.read_text()
    assert "<script src=" not in page and "cdn.bokeh.org" not in page  # everything inlined
    expl = lens.Explanation.load(saved)
    want = lens.load(tiny[1]).generate("William Shakespeare was born in the year", 5)
    np.testing.assert_array_equal(expl.token_ids, want.token_ids)
    assert repr(expl.text[len("William Shakespeare was born in the year"):]) in stdout
    assert "generating" in err and "attributing" in err  # progress on stderr
    # what the browser will draw: the tokens, the logit-lens ranks, the watched ranks, 3 factors
    drawn = report_sources(page)
    assert drawn["saliency_tokens"]["token"] == expl.tokens == drawn["factor_tokens"]["token"]
    assert drawn["rankings_cells"]["rank"] == expl.rankings().ravel().tolist()  # layer-major, generated tokens
    watched = expl.watched[" is"][:, expl.n_prompt - 1:-1]                   # every generated position
    assert drawn["watch_0_cells"]["rank"] == watched.ravel().tolist()
    f = expl.factors(3, layers=(0, 1))
    dominant = expl.by_token(f.dominant() + 1)  # the article's rule; the first position is left out (0)
    dominant[0] = 0
    assert drawn["factor_tokens"]["factor"] == dominant.tolist()
    # a re-render from the saved file draws the same data
    rc, stdout, err = cli("render", saved, "-o", tmp_path / "again.html", "--factors", "3", "--layers", "0-1")
    assert rc == 0, err
    assert report_sources((tmp_path / "again.html").read_text()) == drawn


@pytest.mark.parametrize("stdin,prompt", [("Hello from stdin", "Hello from stdin"),
                                          ("Hello from stdin\n", "Hello from stdin"),
                                          ("Two lines\nhere\n\n", "Two lines\nhere\n")])
def test_prompt_from_stdin(cli, tiny, tmp_path, stdin, prompt):
    """A piped line's final newline is not part of the prompt; anything before it is."""
    rc, stdout, err = cli("explain", "--model", tiny[1], "--prompt", "-", "--max-new-tokens", "2",
                          "-o", tmp_path / "r.html", "--save", tmp_path / "e.npz", stdin=stdin)
    assert rc == 0, err
    assert f"prompt: {prompt!r}" in stdout
    assert lens.Explanation.load(tmp_path / "e.npz").prompt_text == prompt


@pytest.mark.parametrize("prompt", ["Où est le café? 🙂", "日本語のテキスト", "naïve façade — ok"])
def test_non_ascii_text_is_text_everywhere(cli, tiny, tmp_path, prompt):
    rc, stdout, err = cli("explain", "--model", tiny[1], "--prompt", prompt, "--max-new-tokens", "3",
                          "-o", tmp_path / "r.html", "--save", tmp_path / "e.npz")
    assert rc == 0, err
    expl = lens.Explanation.load(tmp_path / "e.npz")
    model = lens.load(tiny[1])
    assert expl.prompt_text == prompt and expl.text == prompt + model.decode(expl.token_ids[expl.n_prompt:])
    assert f"prompt: {prompt!r}" in stdout and "\\x" not in stdout
    header = report_models((tmp_path / "r.html").read_text(encoding="utf-8"))["header"]["text"]
    assert html.escape(prompt) in header and "\\x" not in header


def test_a_watched_string_of_several_tokens_follows_its_first(cli, tiny, tmp_path, tiny_explainer):
    rc, _, err = cli("explain", "--model", tiny[1], "--prompt", "Shakespeare was born in", "--max-new-tokens", "3",
                     "--watch", " 1564", "-o", tmp_path / "r.html", "--save", tmp_path / "e.npz")
    assert rc == 0, err
    expl = lens.Explanation.load(tmp_path / "e.npz")
    assert expl.settings["watch_tokens"][" 1564"] == [" 15", "64"]
    np.testing.assert_array_equal(expl.watched[" 1564"],
                                  tiny_explainer.watch_ranks(expl.hidden_states, expl.token_ids, [" 15"])[" 15"])
    title = report_models((tmp_path / "r.html").read_text())["watch_0"]["title"]
    assert "first of its 2 tokens: ␣15 + 64" in json.dumps(title, ensure_ascii=False)


def test_forced_continuation_from_the_cli(cli, tiny, tmp_path):
    rc, out, err = cli("-q", "explain", "--model", tiny[1], "--prompt", "The capital of France is", "--continuation",
                       " Paris", "--json", "-o", tmp_path / "r.html")
    assert rc == 0, err
    data = json.loads(out)
    assert data["generated"] == " Paris" and data["settings"]["forced"] is True
    assert len(data["attributions"]["grad_x_input"]) == 1


def test_chat_needs_a_template(cli, tiny, tmp_path):
    rc, _, err = cli("explain", "--model", tiny[1], "--prompt", "Hi", "--chat", "-o", tmp_path / "r.html")
    _error(rc, err, "has no chat template")


@pytest.mark.parametrize("args,fragment", [
    (["--prompt", ""], "the prompt is empty"),
    (["--prompt", "word " * 200], "exceeds the model's context of 128"),
    (["--prompt", "hi", "--layers", "3-9"], "layer 3 is out of range"),
    (["--prompt", "hi", "--layers", "x"], "--layers takes a layer or a range"),
    (["--prompt", "hi", "--factors", "0"], "--factors must be >= 1"),
    (["--prompt", "hi", "--factors", "40", "--max-new-tokens", "3"],
     "--factors 40 is more than the 3 positions factorised allow (4 tokens, the first left out)"),
    (["--prompt", "hi", "--factors", "4", "--max-new-tokens", "3"], "--factors 4 is more than the 3 positions"),
    (["--prompt", "hi", "--method", "contrastive"], "needs --foil"),
    (["--prompt", "hi", "--watch", ""], "must be non-empty text"),
    (["--prompt", "hi", "--max-new-tokens", "-1"], "max_new_tokens must be >= 0"),
    (["--prompt", "hi", "--method", "lime"], "invalid choice: 'lime'"),
    (["--prompt", "hi", "--temperature", "inf", "--sample"], "temperature must be a finite number"),
    (["--prompt", "hi", "--seed", "-1", "--sample"], "seed must be between 0 and"),
])
def test_explain_bad_input(cli, tiny, tmp_path, args, fragment):
    out = tmp_path / "r.html"
    rc, stdout, err = cli("explain", "--model", tiny[1], *args, "-o", out)
    _error(rc, err, fragment)
    assert not out.exists()


def test_unknown_model(cli, tmp_path):
    rc, _, err = cli("explain", "--model", "gpt2-xl", "--models-dir", tmp_path, "--prompt", "hi")
    _error(rc, err, "run `lens export gpt2-xl` first")


def test_render_bad_file(cli, tmp_path):
    (tmp_path / "x.npz").write_text("nope")
    rc, _, err = cli("render", tmp_path / "x.npz", "-o", tmp_path / "r.html")
    _error(rc, err, "not a lens explanation file")


def test_contrastive_from_the_cli(cli, tiny, tmp_path):
    saved = tmp_path / "e.npz"
    rc, _, err = cli("explain", "--model", tiny[1], "--prompt", "1, 2, 3,", "--max-new-tokens", "3",
                     "--method", "contrastive", "--foil", " 16", "-o", tmp_path / "r.html", "--save", saved)
    assert rc == 0, err
    e = lens.Explanation.load(saved)
    assert list(e.attributions) == ["contrastive"] and e.settings["foil"] == " 16"
    np.testing.assert_allclose(e.attributions["contrastive"].sum(1), 1, rtol=1e-5)


def test_notebook_rich_display(tiny_explainer):
    e = tiny_explainer.explain("Hello there", max_new_tokens=3)
    html = e._repr_html_()
    assert html.startswith('<iframe sandbox="allow-scripts"') and "srcdoc=" in html
    assert "<script" not in html.split("srcdoc=", 1)[1][:200]  # the document is escaped into the attribute


def test_default_factors_fit_short_sequences(cli, tiny, tmp_path):
    out = tmp_path / "r.html"
    rc, _, err = cli("explain", "--model", tiny[1], "--prompt", "Hi", "--max-new-tokens", "2", "-o", out)
    assert rc == 0, err
    drawn = report_sources(out.read_text())  # 3 tokens: the first left out, so 2 factors
    assert sorted(set(drawn["sparkline_cells"]["label"])) == [1, 2]


def test_notebook_show_loads_bokehjs_once_per_kernel(tiny_explainer, monkeypatch):
    """`show()` in a notebook: BokehJS (~4 MB inline) is sent with the first call only."""
    import builtins

    import bokeh.io

    import lens.explanation as E

    loads, shown = [], []
    monkeypatch.setattr(builtins, "get_ipython", lambda: None, raising=False)
    monkeypatch.setattr(bokeh.io, "output_notebook", lambda *a, **k: loads.append(a))
    monkeypatch.setattr(bokeh.io, "show", lambda layout: shown.append(layout))
    monkeypatch.setitem(E._NOTEBOOK, "ready", False)
    e = tiny_explainer.explain("Hello there", max_new_tokens=2)
    e.show()
    e.show()
    assert len(loads) == 1 and len(shown) == 2 and shown[0] is not shown[1]


def test_json_writes_a_report_only_when_asked(cli, tiny, tmp_path):
    """--json prints the results; it writes report.html into the current folder only with -o."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "lens", "-q", "explain", "--model", str(tiny[1]), "--prompt", "Hi there",
                        "--max-new-tokens", "2", "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["report"] is None and list(tmp_path.iterdir()) == []
    rc, out, err = cli("-q", "explain", "--model", tiny[1], "--prompt", "Hi there", "--max-new-tokens", "2", "--json",
                       "-o", tmp_path / "r.html")
    assert rc == 0 and json.loads(out)["report"] == str(tmp_path / "r.html") and (tmp_path / "r.html").is_file()


def test_a_text_profiled_without_generating(cli, tiny, tiny_torch, tmp_path):
    """--max-new-tokens 0 (the article's Dostoevsky factors are of a text): the logit lens ranks each of
    the text's tokens where the position before predicts it, as a PyTorch logit lens does; no attribution;
    the report says so; the saved file loads back."""
    from references import assert_ranks_match, torch_logit_lens

    text = "William Shakespeare was born in the year 1564"
    out, saved = tmp_path / "r.html", tmp_path / "e.npz"
    rc, stdout, err = cli("explain", "--model", tiny[1], "--prompt", text, "--max-new-tokens", "0", "--factors", "2",
                          "-o", out, "--save", saved, "--json")
    assert rc == 0, err
    data = json.loads(stdout)
    assert data["attributions"] == {} and data["generated"] == ""
    expl = lens.Explanation.load(saved)
    assert expl.n_generated == 0 and expl.n_prompt == expl.n_tokens
    ids = expl.token_ids
    assert_ranks_match(expl.ranks[:, :-1], torch_logit_lens(tiny_torch, ids)[:, :-1], ids[1:])
    page = out.read_text()
    drawn = report_sources(page)
    assert drawn["rankings_cells"]["rank"] == expl.ranks[:, :-1].ravel().tolist()   # the text's tokens 2..n
    assert "Rank of each token of the text" in page and "nothing: the text itself is profiled" in page
    assert "no token was generated" in page


def test_generation_without_attribution(cli, tiny, tmp_path):
    rc, stdout, err = cli("explain", "--model", tiny[1], "--prompt", "William Shakespeare was", "--max-new-tokens", "3",
                          "--no-attribution", "--json", "-o", tmp_path / "r.html")
    assert rc == 0, err
    data = json.loads(stdout)
    want = lens.load(tiny[1]).generate("William Shakespeare was", 3)
    assert data["attributions"] == {} and data["token_ids"] == want.token_ids.tolist()
    assert "no attribution method was asked for" in (tmp_path / "r.html").read_text()
