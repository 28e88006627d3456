"""Fitting its users' world: machine-readable results, tables, the model store from any folder,
`lens list` and `lens info`, refusals before any work, quiet and verbose runs, exporting a model
object, and a user's own Bokeh server app built with lens's helpers."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import lens
from lens.cli import main


def test_json_output_matches_the_saved_explanation(cli, tiny, tmp_path):
    rc, out, err = cli("-q", "explain", "--model", tiny[1], "--prompt", "The capital of France is", "--max-new-tokens",
                       "4", "--watch", " Paris", "--method", "grad_x_input", "--method", "gradient", "--json",
                       "-o", tmp_path / "r.html", "--save", tmp_path / "e.npz")
    assert rc == 0 and err == "", err  # -q: nothing on stderr
    data = json.loads(out)
    expl = lens.Explanation.load(tmp_path / "e.npz")
    assert data["tokens"] == expl.tokens and data["n_prompt"] == expl.n_prompt
    assert data["prompt"] == "The capital of France is" and data["generated"] == expl.generated_text
    np.testing.assert_allclose(data["probabilities"], expl.probabilities, rtol=1e-6)
    for m in ("grad_x_input", "gradient"):
        np.testing.assert_allclose(data["attributions"][m], expl.attributions[m], rtol=1e-6)
    assert data["rankings"] == expl.rankings().tolist()
    assert data["watched"][" Paris"] == expl.watched[" Paris"][:, expl.n_prompt - 1:-1].tolist()
    assert data["report"] == str(tmp_path / "r.html") and data["warnings"] == []
    assert set(data["devices"]) == {"onnxruntime", "jax"} and data["family"] == "gpt2"


def test_tables(tiny_explainer):
    expl = tiny_explainer.explain("One, two, three,", max_new_tokens=3, methods=("grad_x_input", "gradient"))
    df = expl.to_pandas()
    assert list(df.columns) == ["generated_position", "generated_token", "input_position", "input_token", "method",
                                "score"]
    assert len(df) == 2 * sum(expl.n_prompt + t for t in range(expl.n_generated))
    for m, a in expl.attributions.items():
        for t in range(expl.n_generated):
            rows = df[(df.method == m) & (df.generated_position == expl.n_prompt + t)]
            np.testing.assert_allclose(rows.score, a[t, :expl.n_prompt + t])
            assert rows.input_token.tolist() == expl.tokens[:expl.n_prompt + t]
    r = expl.rankings_frame()
    assert len(r) == expl.n_layers * expl.n_generated
    assert r.pivot(index="layer", columns="generated_position", values="rank").to_numpy().tolist() == \
        expl.rankings().tolist()


def test_store_from_any_folder_and_lens_list(tiny, tmp_path, cli):
    """No ./models here and no LENS_MODELS: the per-user store; `lens list` shows it and its models."""
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "LENS_MODELS": ""}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import os, sys, shutil\n"
            f"os.chdir({str(elsewhere)!r})\n"
            "from lens.store import default_models_dir\n"
            "d = default_models_dir(); d.mkdir(parents=True)\n"
            f"shutil.copytree({str(tiny[1])!r}, d / 'tiny')\n"
            "from lens.cli import main\n"
            "sys.exit(main(['list', '--json']))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, **env),
                       timeout=120)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["store"] == str(tmp_path / "data" / "lens" / "models")
    (m,) = data["models"]
    assert (m["name"], m["architecture"], m["n_layers"], m["dtype"], m["state"]) == ("tiny", "gpt2", 2, "float32", "ok")
    assert m["bytes"] == sum(f.stat().st_size for f in (tiny[1]).rglob("*") if f.is_file())


def test_lens_info_names_each_engines_device(cli):
    rc, out, err = cli("info")
    assert rc == 0, err
    assert "runs on CPUExecutionProvider" in out and "jax:" in out and "runs on cpu" in out


def test_export_without_its_extra_is_refused_before_any_work(monkeypatch, tmp_path, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optimum.exporters.onnx"
                        else real(name, *a))
    assert main(["export", "gpt2", "--models-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["lens: error: exporting needs the export extra: pip install "
                                        "'lens-explain[export]' (missing optimum.exporters.onnx)"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change,fragment", [
    ({"rope_scaling": {"rope_type": "longrope", "factor": 8.0}}, "rope scaling 'longrope' is not implemented"),
    ({"hidden_act": "mish"}, "activation function 'mish'"),
    ({"num_local_experts": 8}, "mixture-of-experts"),
    ({"pretraining_tp": 2}, "pretraining_tp=2"),
])
def test_unsupported_llama_configs_are_refused_at_export(tmp_path, change, fragment, capsys):
    from lens.testing import build_random_llama

    src = build_random_llama(tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(dict(cfg, **change)))
    assert main(["export", str(src), "--models-dir", str(tmp_path / "m")]) == 2
    assert fragment in capsys.readouterr().err
    assert not any((tmp_path / "m").iterdir())


def test_export_a_model_object(tiny, tiny_model, tmp_path, capsys):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(tiny[0])
    folder = lens.export.export_model(model, tmp_path, name="in-memory", tokenizer=AutoTokenizer.from_pretrained(tiny[0]))
    assert folder == tmp_path / "in-memory" and sorted(p.name for p in tmp_path.iterdir()) == ["in-memory"]
    again = lens.load(folder)
    assert again.name == "in-memory"
    np.testing.assert_array_equal(again.generate("Hello there", 6).token_ids, tiny_model.generate("Hello there", 6).token_ids)
    err = capsys.readouterr().err
    assert "torch_dtype" not in err


def test_export_prints_no_third_party_noise(cli, tiny, tmp_path):
    rc, out, err = cli("export", tiny[0], "--models-dir", tmp_path, "--no-validate")
    assert rc == 0, err
    assert all(line.startswith("lens: ") for line in err.strip().splitlines()), err


@pytest.mark.browser
def test_a_users_own_server_app(tiny, browser, tiny_explainer):
    from browser import Page, free_port, wait_for_port

    port = free_port()
    app = os.path.join(os.path.dirname(__file__), "..", "examples", "app.py")
    proc = subprocess.Popen([sys.executable, "-m", "bokeh", "serve", app, "--port", str(port), "--args", str(tiny[1])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port)
        pg = Page(browser, offline=False)
        try:
            pg.page.goto(f"http://127.0.0.1:{port}/app")
            pg.page.wait_for_selector("textarea")
            assert "My lens app" in pg.text_of("app_title")
            pg.page.click("button:has-text('Explain')")
            pg.page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('status').text.includes('lens-')",
                                      timeout=120_000)
            status = pg.page.evaluate("() => Bokeh.documents[0].get_model_by_name('status').text")
            import html
            assert "lens-done" in status
            assert html.escape(tiny_explainer.explain("The capital of France is", max_new_tokens=10).text) in status
        finally:
            pg.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)



def test_the_over_2_gb_path_on_a_small_model(tiny_llama, tmp_path, monkeypatch):
    """Graphs over protobuf's 2 GB limit skip optimum's post-processing (it cannot serialise them):
    that path, taken here by lowering the limit, exports, validates and generates as the usual one."""
    from lens.export import convert

    monkeypatch.setattr(convert, "_PROTO_LIMIT", 1)
    folder = convert.export_model(str(tiny_llama[0]), models_dir=tmp_path, name="big-path")
    assert lens.load(folder).manifest["validation"]["max_relative_error"] < 1e-4
    np.testing.assert_array_equal(lens.load(folder).generate("Hello there", 6).token_ids,
                                  lens.load(tiny_llama[1]).generate("Hello there", 6).token_ids)
