"""Every bad input we could think of, through the `lens` command: one line on stderr starting with
"lens: error:", exit code 2, no traceback, and no file created, changed or left behind."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from lens.cli import main

LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"


@pytest.fixture(scope="module")
def world(tiny, tiny_explainer, tmp_path_factory):
    """A store with the tiny model, a good saved explanation, crafted bad files, a checkpoint."""
    root = tmp_path_factory.mktemp("bad")
    shutil.copytree(tiny[1], root / "models" / "tiny")
    expl = tiny_explainer.explain("Hello there, friend", max_new_tokens=3)
    good = expl.save(root / "good.npz")
    (root / "empty.npz").write_bytes(b"")
    (root / "text.npz").write_text("not an explanation")
    np.save(root / "array.npy", np.zeros(3))
    (root / "adir").mkdir()
    (root / "existing.html").write_text("a report the user keeps")
    with np.load(good) as z:
        arrays = dict(z)
    meta = json.loads(bytes(arrays["meta"]).decode())

    def crafted(name, meta_changes=None, array_changes=None, drop=()):
        m = dict(meta, **(meta_changes or {}))
        a = {k: v for k, v in arrays.items() if k not in drop}
        a.update(array_changes or {})
        if "meta" not in drop:
            a["meta"] = np.frombuffer(json.dumps(m).encode(), np.uint8)
        np.savez(root / f"{name}.npz", **a)

    n, n_gen, L = expl.n_tokens, expl.n_generated, expl.n_layers
    crafted("n_prompt_negative", {"n_prompt": -3})
    crafted("n_prompt_huge", {"n_prompt": 10 ** 9})
    crafted("n_prompt_text", {"n_prompt": "5"})
    crafted("tokens_ints", {"tokens": list(range(n))})
    crafted("timings_text", {"timings": {"generate": "fast"}})
    crafted("short_rows", array_changes={"attributions/grad_x_input": np.ones((n_gen, n - 2), np.float32) / n})
    crafted("nan_acts", array_changes={"activations": np.full_like(arrays["activations"], np.nan)})
    crafted("ranks_3d", array_changes={"ranks": np.ones((L, n, 2), np.int64)})
    crafted("no_meta", drop=("meta",))
    crafted("newer", {"format": 99})
    crafted("probs_out_of_range", array_changes={"probabilities": np.full(n_gen, 7.0, np.float32)})
    crafted("top_tokens_short", {"top_tokens": []})
    crafted("object_array", array_changes={"ranks": np.array([{"x": 1}], dtype=object)})
    np.savez(root / "meta_not_json.npz", **dict(arrays, meta=np.frombuffer(b"{not json", np.uint8)))
    # a header claiming a 100 GB array (the data is not there: it must be refused from the header)
    with zipfile.ZipFile(root / "huge.npz", "w") as z:
        for k, v in arrays.items():
            if k != "hidden_states":
                with z.open(k + ".npy", "w") as f:
                    np.lib.format.write_array(f, v)
        with z.open("hidden_states.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (L + 1, n, 10 ** 9)})
    # a zip bomb: 200 MB of zeros in a 0.2 MB entry of a plausible shape (refused before inflating it)
    with zipfile.ZipFile(root / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        for k, v in arrays.items():
            if k != "activations":
                with z.open(k + ".npy", "w") as f:
                    np.lib.format.write_array(f, v)
        with z.open("activations.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                     "shape": (L, n, (200 << 20) // (4 * L * n))})
            for _ in range(200):
                f.write(bytes(1 << 20))
    deep = json.dumps(meta).replace('"settings": {', '"deep": ' + "[" * 100_000 + "]" * 100_000 + ', "settings": {', 1)
    np.savez(root / "deep_meta.npz", **dict(arrays, meta=np.frombuffer(deep.encode(), np.uint8)))
    crafted("watch_text", {"settings": dict(meta["settings"], watch_tokens="x")})
    crafted("watch_ints", {"settings": dict(meta["settings"], watch_tokens={" the": 5})})
    # broken model folders
    for name, change in [("no_sha", lambda m: m["files"]["model.onnx"].pop("sha256")),
                         ("layers_text", lambda m: m.__setitem__("n_layers", "2")),
                         ("no_arch", lambda m: m.pop("architecture")),
                         ("layers_5", lambda m: m.__setitem__("n_layers", 5)),
                         ("loop_template", lambda m: m.__setitem__("chat_template", LOOP)),
                         ("bomb_template", lambda m: m.__setitem__("chat_template", "{{ 'ab' * 10**10 }}")),
                         ("files_outside", lambda m: m["files"].__setitem__("../x", {"size": 1, "sha256": "0" * 64}))]:
        shutil.copytree(tiny[1], root / "models" / name)
        m = json.loads((root / "models" / name / "manifest.json").read_text())
        change(m)
        (root / "models" / name / "manifest.json").write_text(json.dumps(m))
    garbage = root / "models" / "garbage_weights"
    shutil.copytree(tiny[1], garbage)
    (garbage / "model.safetensors").write_bytes(os.urandom((garbage / "model.safetensors").stat().st_size))
    from lens.store import ModelFolder, sha256
    m = json.loads((garbage / "manifest.json").read_text())
    m["files"]["model.safetensors"]["sha256"] = sha256(garbage / "model.safetensors")  # re-hashed: looks valid
    (garbage / "manifest.json").write_text(json.dumps(m))
    ModelFolder  # noqa: B018
    # checkpoints for export
    for name, cfg in [("config_list", []), ("config_missing", {"model_type": "gpt2", "n_layer": 2})]:
        (root / "ckpt" / name).mkdir(parents=True)
        (root / "ckpt" / name / "config.json").write_text(json.dumps(cfg))
        shutil.copy(tiny[0] / "model.safetensors", root / "ckpt" / name)
    trunc = root / "ckpt" / "truncated"
    shutil.copytree(tiny[0], trunc)
    with open(trunc / "model.safetensors", "r+b") as f:
        f.truncate(5000)
    return root, tiny


P = ["explain", "--model", "tiny", "--prompt"]
X = ["explain", "--model", "tiny", "--prompt", "hi"]
CASES = [
    # prompts
    (P + [""], None, "the prompt is empty"),
    (P + ["   \n "], None, "the prompt is empty"),
    (P + ["-"], b"", "the prompt is empty"),
    (P + ["-"], b"\xff\xfe not utf-8", "not UTF-8"),
    (P + ["-"], bytes(range(256)), "not UTF-8"),
    (P + ["-"], b"a\x00b", "NUL"),
    (P + ["<|endoftext|>"], None, "only special tokens"),
    (P + ["<|endoftext|><|endoftext|>"], None, "only special tokens"),
    (P + ["word " * 200], None, "exceeds the model's context"),
    # numbers
    (X + ["--max-new-tokens", "-1"], None, "max_new_tokens must be >= 0"),
    (X + ["--max-new-tokens", "-5"], None, "max_new_tokens must be >= 0"),
    (X + ["--max-new-tokens", "0", "--faithfulness"], None, "faithfulness measures attribution methods on generated"),
    (X + ["--no-attribution", "--faithfulness"], None, "faithfulness measures attribution methods on generated"),
    (X + ["--no-attribution", "--method", "gradient"], None, "--no-attribution and --method contradict"),
    (X + ["--max-new-tokens", "2.5"], None, "invalid int value"),
    (X + ["--max-new-tokens", "abc"], None, "invalid int value"),
    (X + ["--max-new-tokens", "100000"], None, "exceeds the model's context"),
    (X + ["--sample", "--temperature", "1e-30"], None, "temperature must be"),
    (X + ["--sample", "--temperature", "inf"], None, "temperature must be"),
    (X + ["--sample", "--temperature", "nan"], None, "temperature must be"),
    (X + ["--sample", "--temperature", "-1"], None, "temperature must be"),
    (X + ["--sample", "--top-k", "0"], None, "top_k must be >= 1"),
    (X + ["--sample", "--top-k", "-3"], None, "top_k must be >= 1"),
    (X + ["--sample", "--top-p", "0"], None, "top_p must be in (0, 1]"),
    (X + ["--sample", "--top-p", "1.5"], None, "top_p must be in (0, 1]"),
    (X + ["--sample", "--seed", "-1"], None, "seed must be between 0 and"),
    (X + ["--sample", "--seed", "99999999999999999999"], None, "seed must be between 0 and"),
    (X + ["--ig-steps", "0"], None, "ig_steps must be between 1 and"),
    (X + ["--ig-steps", "5000"], None, "ig_steps must be between 1 and"),
    (X + ["--factors", "0"], None, "--factors must be >= 1"),
    (X + ["--factors", "-2"], None, "--factors must be >= 1"),
    (X + ["--factors", "1000"], None, "--factors 1000 is more than"),
    (X + ["--heatmap-neurons", "0"], None, "--heatmap-neurons must be >= 1"),
    # choices and tokens
    (X + ["--method", "lime"], None, "invalid choice: 'lime'"),
    (X + ["--target", "loss"], None, "invalid choice: 'loss'"),
    (X + ["--method", "contrastive"], None, "needs --foil"),
    (X + ["--method", "contrastive", "--foil", ""], None, "must be non-empty text"),
    (X + ["--method", "contrastive", "--foil", " 1564"], None, "is 2 tokens"),
    (X + ["--method", "integrated_gradients", "--baseline", " 1564"], None, "the baseline ' 1564' is 2 tokens"),
    (X + ["--method", "integrated_gradients", "--baseline", ""], None, "the baseline must be zero, mean, pad"),
    (X + ["--method", "attnlrp", "--target", "probability"], None, "attnlrp explains the logit"),
    (X + ["--watch", ""], None, "must be non-empty text"),
    (X + ["--layers", "99"], None, "layer 99 is out of range"),
    (X + ["--layers", "a-b"], None, "--layers takes a layer or a range"),
    (X + ["--layers", "3-1"], None, "selection is empty"),
    (X + ["--layers", "-1"], None, "--layers takes a layer or a range"),
    (X + ["--heatmap-layer", "99"], None, "layer 99 is out of range"),
    (X + ["--chat"], None, "has no chat template"),
    (X + ["--continuation", ""], None, "continuation must be non-empty"),
    (X + ["--frobnicate"], None, "unrecognized arguments: --frobnicate"),
    (["explain", "--model", "tiny"], None, "the following arguments are required: --prompt"),
    ([], None, "the following arguments are required: command"),
    # paths
    (X + ["-o", ""], None, "the report path is empty"),
    (X + ["-o", "/"], None, "is a folder"),
    (X + ["-o", "{root}/adir"], None, "is a folder"),
    (X + ["-o", "{root}/missing/r.html"], None, "does not exist"),
    (X + ["--save", ""], None, "the --save path is empty"),
    (X + ["--save", "{root}/adir"], None, "is a folder"),
    (X + ["-o", "{root}/same.npz", "--save", "{root}/same.npz"], None, "name the same file"),
    (X + ["-o", "{root}/existing.html", "--save", "/proc/x.npz"], None, "cannot write /proc/x.npz"),
    (X + ["-o", "{root}/existing.html", "--save", "/sys/x.npz"], None, "cannot write /sys/x.npz"),
    (X + ["-o", "/proc/report.html"], None, "cannot write /proc/report.html"),
    # models
    (["explain", "--model", "nonexistent", "--prompt", "hi"], None, "is not exported"),
    (["explain", "--model", "tiny", "--models-dir", "{root}/nowhere", "--prompt", "hi"], None, "is not exported"),
    (["explain", "--model", "no_sha", "--prompt", "hi"], None, "has no size and sha256"),
    (["explain", "--model", "layers_text", "--prompt", "hi"], None, "n_layers is '2'"),
    (["explain", "--model", "no_arch", "--prompt", "hi"], None, "architecture is None"),
    (["explain", "--model", "layers_5", "--prompt", "hi"], None, "the manifest says 5 layers, the graph has 2"),
    (["explain", "--model", "loop_template", "--prompt", "hi", "--chat"], None, "runs more than 1,000,000 steps"),
    (["explain", "--model", "bomb_template", "--prompt", "hi", "--chat"], None, "'*' would build 20,000,000,000"),
    (["explain", "--model", "files_outside", "--prompt", "hi"], None, "points outside the folder"),
    (["explain", "--model", "garbage_weights", "--prompt", "hi"], None, "cannot"),
    # saved explanations
    (["render", "{root}/missing.npz"], None, "does not exist"),
    (["render", "{root}/adir"], None, "is not a file"),
    (["render", "{root}/empty.npz"], None, "not a lens explanation file"),
    (["render", "{root}/text.npz"], None, "not a lens explanation file"),
    (["render", "{root}/array.npy"], None, "not a lens explanation file"),
    (["render", "{root}/no_meta.npz"], None, "not a lens explanation file"),
    (["render", "{root}/meta_not_json.npz"], None, "not a lens explanation file"),
    (["render", "{root}/newer.npz"], None, "written by a newer lens"),
    (["render", "{root}/n_prompt_negative.npz"], None, "n_prompt -3 is not an integer"),
    (["render", "{root}/n_prompt_huge.npz"], None, "n_prompt 1000000000 is not an integer"),
    (["render", "{root}/n_prompt_text.npz"], None, "n_prompt '5' is not an integer"),
    (["render", "{root}/tokens_ints.npz"], None, "tokens are not a list of text"),
    (["render", "{root}/timings_text.npz"], None, "timings are not numbers"),
    (["render", "{root}/short_rows.npz"], None, "attributions['grad_x_input'] has shape"),
    (["render", "{root}/nan_acts.npz"], None, "activations is not finite numbers"),
    (["render", "{root}/ranks_3d.npz"], None, "ranks is not a 2-D array"),
    (["render", "{root}/probs_out_of_range.npz"], None, "probabilities outside 0..1"),
    (["render", "{root}/top_tokens_short.npz"], None, "top_tokens is not a"),
    (["render", "{root}/object_array.npz"], None, "holds Python objects"),
    (["render", "{root}/huge.npz"], None, "claims"),
    (["render", "{root}/bomb.npz"], None, "would inflate"),
    (["render", "{root}/deep_meta.npz"], None, "nested too deeply"),
    (["render", "{root}/watch_text.npz"], None, "watch_tokens is not a mapping"),
    (["render", "{root}/watch_ints.npz"], None, "watch_tokens is not a mapping"),
    (["render", "{root}/good.npz", "-o", "{root}/good.npz"], None, "would overwrite the explanation"),
    (["render", "{root}/good.npz", "--factors", "0"], None, "--factors must be >= 1"),
    # the server's settings
    (["serve", "--model", "tiny", "--port", "70000"], None, "port must be between 1 and 65535"),
    (["serve", "--model", "tiny", "--port", "0"], None, "port must be between 1 and 65535"),
    (["serve", "--model", "tiny", "--port", "http"], None, "invalid int value: 'http'"),
    (["serve", "--model", "tiny", "--max-new-tokens", "0"], None, "max_new_tokens must be >= 1"),
    # exports
    (["export", "{ckpt}", "--name", "."], None, "must be letters"),
    (["export", "{ckpt}", "--name", ".."], None, "must be letters"),
    (["export", "{ckpt}", "--name", "a/b"], None, "must be letters"),
    (["export", "{ckpt}", "--name", ""], None, "must be letters"),
    (["export", "{ckpt}", "--bos", "maybe"], None, "invalid choice: 'maybe'"),
    (["export", "{root}/ckpt/config_list"], None, "config.json is not a JSON object"),
    (["export", "{root}/ckpt/config_missing"], None, "config.json has no"),
    (["export", "{root}/ckpt/truncated", "--name", "trunc"], None, "cannot load the weights"),
]


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lens-verified.json"}


@pytest.mark.parametrize("args,stdin,fragment", CASES, ids=[f"{i}-{c[2][:30]}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_clean_line(world, args, stdin, fragment, capsys, monkeypatch):
    root, tiny = world
    argv = [a.format(root=root, ckpt=tiny[0]) for a in args]
    if argv and argv[0] in ("explain", "serve", "export") and "--models-dir" not in argv:
        argv += ["--models-dir", str(root / "models")]
    if "-o" not in argv and argv[:1] in (["explain"], ["render"]):
        argv += ["-o", str(root / "out.html")]
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    before = _snapshot(root)
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    lines = [l for l in err.strip().splitlines() if not l.startswith("lens: ") or l.startswith("lens: error:")]
    assert len(lines) == 1 and lines[0].startswith("lens: error:") and "Traceback" not in err, err  # + progress
    assert fragment in lines[0], lines[0]
    assert _snapshot(root) == before  # nothing created, changed or left behind


def test_invalid_utf8_on_argv(world):
    root, _ = world
    env = dict(os.environ, LC_ALL="C.UTF-8")
    p = subprocess.run([sys.executable, "-m", "lens", "explain", "--models-dir", str(root / "models"),
                        "--model", "tiny", "--prompt", b"caf\xe9 \xff", "-o", str(root / "x.html")],
                       capture_output=True, env=env, timeout=120)
    err = p.stderr.decode()
    assert p.returncode == 2 and len(err.strip().splitlines()) == 1 and "not valid text" in err, err
    assert not (root / "x.html").exists()


@pytest.mark.parametrize("call,fragment", [
    (lambda e: e.explain(123), "the prompt must be text or a list of token ids"),
    (lambda e: e.explain(None), "the prompt must be text or a list of token ids"),
    (lambda e: e.explain("ab\ud800cd"), "not valid text"),
    (lambda e: e.explain([1, 2, 99999999]), "token ids must be in 0.."),
    (lambda e: e.explain([-1, 2]), "token ids must be in 0.."),
    (lambda e: e.explain([1.5, 2]), "token ids must be integers"),
    (lambda e: e.explain("hi", max_new_tokens=2.5), "max_new_tokens must be an integer"),
    (lambda e: e.explain("hi", max_new_tokens="3"), "max_new_tokens must be an integer"),
    (lambda e: e.explain("hi", lens_top_k=0), "lens_top_k must be between 1 and 100"),
    (lambda e: e.explain("hi", methods="lime"), "unknown attribution method 'lime'"),
    (lambda e: e.explain("hi", frobnicate=1), "unknown setting 'frobnicate'"),
    (lambda e: e.model.run([]), "sequence of 0 tokens"),
    (lambda e: e.explain("hi", {"frobnicate": 1}), "unknown setting 'frobnicate'"),
    (lambda e: e.explain("hi", [3]), "settings must be lens.ExplainSettings or a dict"),
    (lambda e: type(e)(123), "model must be a lens.Model"),
    (lambda e: type(e)(e.model, memory_budget_bytes=-1), "memory_budget_bytes must be a positive integer"),
    (lambda e: _load(e, add_bos="no"), "add_bos must be True, False or None"),
    (lambda e: _load(e, threads=-3), "threads must be a positive integer"),
    (lambda e: _load(e, threads=2.5), "threads must be a positive integer"),
    (lambda e: _load(e, providers=["BogusExecutionProvider"]), "unknown execution provider 'BogusExecutionProvider'"),
    (lambda e: _load(e, providers="CPUExecutionProvider"), "providers must be a list"),
    (lambda e: _load(e, verify="bogus"), "verify must be True, False or 'full'"),
    (lambda e: _expl(e).layer_predictions(k=10 ** 6), "k must be an integer in 1..10"),
    (lambda e: _expl(e).layer_predictions(k=-1), "k must be an integer in 1..10"),
    (lambda e: _expl(e).layer_predictions(k=0), "k must be an integer in 1..10"),
    (lambda e: _expl(e).layer_predictions(position=1.5), "position 1.5 is not an integer"),
    (lambda e: _expl(e).by_token(np.zeros(99)), "by_token takes one value per position"),
    (lambda e: _expl(e).by_token(3.0), "by_token takes one value per position"),
])
def test_bad_api_input_raises_lens_error(tiny_explainer, call, fragment):
    import lens
    with pytest.raises(lens.LensError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        call(tiny_explainer)


def _load(explainer, **kw):
    import lens
    return lens.load(explainer.model.folder, **kw)


def _expl(explainer):
    return explainer.explain("Hello there", max_new_tokens=1)


def test_the_api_takes_what_it_reasonably_can(tiny, tiny_explainer):
    """A folder for Explainer, a dict for settings: the same results as the long forms."""
    import lens
    a = lens.Explainer(str(tiny[1])).explain("Hello there", {"max_new_tokens": 2, "lens_top_k": 3})
    b = tiny_explainer.explain("Hello there", max_new_tokens=2, lens_top_k=3)
    assert a.tokens == b.tokens and len(a.layer_predictions()[0]) == 3
    np.testing.assert_allclose(a.attributions["grad_x_input"], b.attributions["grad_x_input"], rtol=1e-5)


def test_gradients_that_cannot_fit_the_budget_fail_before_generating(world, monkeypatch, capsys):
    """LENS_GRAD_MEMORY too small for even one row of this prompt's gradients (layers recomputed,
    attention in blocks): one line and exit 2, before the model generates anything."""
    root, _ = world
    monkeypatch.setenv("LENS_GRAD_MEMORY", "500000")
    import lens.runtime.generation as G

    monkeypatch.setattr(G.Generating, "generate", lambda *a, **k: pytest.fail("generated before refusing"))
    rc = main(["explain", "--models-dir", str(root / "models"), "--model", "tiny", "--prompt", "word " * 40,
               "-o", str(root / "never.html")])
    err = [l for l in capsys.readouterr().err.strip().splitlines() if l.startswith("lens: error:")]
    assert rc == 2 and len(err) == 1 and "more than the gradient memory budget of 0 MiB" in err[0], err
    assert not (root / "never.html").exists()


def test_output_to_dev_null_is_written_in_place(world, capsys, monkeypatch):
    """A device as the report path is written, not replaced, and no probe file is made beside it."""
    root, _ = world
    before = set(os.listdir("/dev"))
    real_open = Path.open

    def no_probe(self, *a, **k):
        assert ".probe-" not in self.name, self
        return real_open(self, *a, **k)

    monkeypatch.setattr(Path, "open", no_probe)
    rc = main(["explain", "--models-dir", str(root / "models"), "--model", "tiny", "--prompt", "Hello",
               "--max-new-tokens", "2", "-o", "/dev/null"])
    assert rc == 0 and os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    assert set(os.listdir("/dev")) == before
