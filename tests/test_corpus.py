"""Corpus mode (`lens corpus`) on a tiny exported GPT-2 and 200 synthetic prompts: every output
checked against brute force from `model.run` / `model.explain` on each prompt, a resumed run and a
two-node Ray cluster against an uninterrupted local run."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("ray")

from lens.corpus import topk as T  # noqa: E402
from lens.corpus.prompts import read_prompts  # noqa: E402

WORDS = 'the cat sat on a mat and 1 2 3 dog ran fast " quote ( code ) = def x . , Paris 1564'.split()
TOP_K = 5
FACTORS = 3


def _prompts(n=200, seed=0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20))) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "prompts.txt"
    lines = _prompts()
    lines.insert(7, "")  # a blank line: skipped, but row numbers still count it
    path.write_text("\n".join(lines))
    return path


def _corpus(model, prompts, out, *extra, env=None, timeout=600):
    cmd = [sys.executable, "-m", "lens", "corpus", "--model", str(model), "--prompts", str(prompts), "--out",
           str(out), "--top-k", str(TOP_K), "--factors", str(FACTORS), *map(str, extra)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def profiled(tiny, corpus_file, tmp_path_factory):
    """A forward-only run: the neuron-study mode."""
    out = tmp_path_factory.mktemp("profiled") / "out"
    code, _, err = _corpus(tiny[1], corpus_file, out, "--batch-size", 16)
    assert code == 0, err
    return out


GENERATE = ("--max-new-tokens", 2, "--method", "grad_x_input", "--method", "attnlrp", "--batch-size", 4)


@pytest.fixture(scope="module")
def explained(tiny, corpus_file, tmp_path_factory):
    """A run that generates two tokens per prompt and attributes them."""
    out = tmp_path_factory.mktemp("explained") / "out"
    code, _, err = _corpus(tiny[1], corpus_file, out, *GENERATE)
    assert code == 0, err
    return out


def _brute_force(model, examples, layers, k):
    """Top-k per (layer, neuron) from one `model.run` per prompt, first positions left out."""
    acts, ex, pos = [], [], []
    for e, ids in examples.items():
        a = model.run(ids).activations[layers]                            # [layers, seq, d_mlp]
        if a.shape[1] < 2:
            continue
        acts.append(a[:, 1:].transpose(1, 0, 2).reshape(a.shape[1] - 1, -1))
        ex += [e] * (a.shape[1] - 1)
        pos += list(range(1, a.shape[1]))
    return np.concatenate(acts), np.asarray(ex), np.asarray(pos)


def _full_ids(out):
    t = pq.read_table(out / "examples.parquet")
    return dict(zip(t.column("example").to_pylist(), t.column("token_ids").to_pylist()))


def _assert_same_ranking(table, values, examples, positions, layers, d_mlp, k):
    """The parquet table equals the brute-force ranking; where two values differ by less than float
    noise (batched vs single runs) their order may differ, so ids are compared away from near-ties."""
    got = table.sort_by([("layer", "ascending"), ("neuron", "ascending"), ("rank", "ascending")])
    assert got.num_rows == values.size
    units = values.shape[0]
    np.testing.assert_array_equal(got.column("layer").to_numpy(), np.repeat(np.asarray(layers), d_mlp * k))
    np.testing.assert_array_equal(got.column("rank").to_numpy(), np.tile(np.arange(1, k + 1), units))
    v = got.column("activation").to_numpy().reshape(units, k)
    np.testing.assert_allclose(v, values, rtol=1e-5, atol=1e-5)
    gap = np.minimum(np.abs(np.diff(values, axis=1, prepend=np.inf)), np.abs(np.diff(values, axis=1, append=-np.inf)))
    clear = gap > 1e-4
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(got.column("example").to_numpy().reshape(units, k)[clear], examples[clear])
    np.testing.assert_array_equal(got.column("position").to_numpy().reshape(units, k)[clear], positions[clear])


def test_top_activations_equal_brute_force(profiled, tiny_model, corpus_file):
    rows, texts = read_prompts(corpus_file)
    assert rows[7] == 8 and len(rows) == 200  # the blank line 7 skipped, row numbers kept
    examples = {e: tiny_model.prompt_ids(t) for e, t in zip(rows, texts)}
    assert _full_ids(profiled) == examples
    layers = list(range(tiny_model.n_layers))
    acts, ex, pos = _brute_force(tiny_model, examples, layers, TOP_K)
    order = np.lexsort((pos[None].repeat(acts.shape[1], 0), ex[None].repeat(acts.shape[1], 0), -acts.T), axis=1)
    top = order[:, :TOP_K]
    table = pq.read_table(profiled / "top_activations.parquet")
    _assert_same_ranking(table, np.take_along_axis(acts.T, top, 1), ex[top], pos[top], layers, tiny_model.d_mlp, TOP_K)


def test_factor_top_contexts_equal_brute_force(profiled, tiny_model):
    """factors.npz's top contexts are the top-k over every token of the fitted NMF's factor values."""
    from lens.corpus.factors import StreamingNMF, factor_values

    f = np.load(profiled / "factors.npz")
    np.testing.assert_array_equal(f["loadings"], StreamingNMF.load(profiled / "state", FACTORS).loadings)
    examples = _full_ids(profiled)
    acts, ex, pos = _brute_force(tiny_model, examples, [0, 1], TOP_K)
    w = factor_values(acts, f["loadings"])
    top = T.of_tokens(w, ex, pos, TOP_K)
    np.testing.assert_allclose(f["top_values"], top.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(f["top_examples"], top.examples)
    np.testing.assert_array_equal(f["top_positions"], top.positions)
    # each factor's top neurons are its largest loadings
    h = f["loadings"]
    best = np.argmax(h, axis=1)
    np.testing.assert_array_equal(f["top_neuron_layers"][:, 0] * tiny_model.d_mlp + f["top_neurons"][:, 0], best)
    # the streaming fit, one pass over the shards, explains nearly as much as NMF fitted on everything at once
    from sklearn.decomposition import NMF
    a = np.maximum(acts, 0)
    batch = NMF(FACTORS, init="nndsvda", random_state=0, max_iter=500).fit(a)
    wb = batch.transform(a)
    explained = lambda w, h: 1 - np.sum((a - w @ h) ** 2) / np.sum(a ** 2)  # noqa: E731
    print(f"explained: streaming {explained(w, h):.3f}, batch {explained(wb, batch.components_):.3f}")
    assert explained(w, h) > 0.95 * explained(wb, batch.components_)


def test_factor_values_are_nonnegative_least_squares():
    """Each token's factor values equal SciPy's NNLS solution, whatever tokens sit beside it."""
    from scipy.optimize import nnls

    from lens.corpus.factors import factor_values

    rng = np.random.default_rng(0)
    h = np.abs(rng.normal(size=(6, 300)))
    acts = rng.normal(size=(40, 300)) + np.abs(rng.normal(size=(40, 6))) @ h
    w = factor_values(acts, h)
    for i in range(40):
        np.testing.assert_allclose(w[i], nnls(h.T, np.maximum(acts[i], 0))[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(factor_values(acts[:7], h), w[:7])


def test_report_paints_real_activations(profiled, tiny_model):
    """The report's painted windows hold the neuron's activations from a fresh run of that prompt."""
    from lens.corpus.outputs import _windows

    examples = _full_ids(profiled)
    ctx = [np.load(p) for p in sorted((profiled / "state").glob("contexts-*.npz"))]
    windows = _windows(ctx)
    assert len(windows) >= 4 * tiny_model.n_layers
    for (unit, e, p), (lo, values) in list(windows.items())[::17]:
        layer, neuron = divmod(unit, tiny_model.d_mlp)
        a = tiny_model.run(examples[e]).activations[layer, lo:lo + len(values), neuron]
        np.testing.assert_allclose(values, a, rtol=1e-5, atol=1e-5)
        assert lo <= p < lo + len(values)
    html = (profiled / "report.html").read_text()
    assert "factor 0: top neurons" in html and "corpus_contexts" in html


def test_attributions_equal_explain(explained, tiny_explainer, corpus_file):
    t = pq.read_table(explained / "examples.parquet").to_pylist()
    assert len(t) == 200
    rows, texts = read_prompts(corpus_file)
    for r in t[::20]:
        expl = tiny_explainer.explain(r["text"], max_new_tokens=2, methods=("grad_x_input", "attnlrp"))
        assert r["text"] == texts[rows.index(r["example"])]
        assert r["token_ids"] == expl.token_ids.tolist()
        assert r["n_prompt"] == expl.n_prompt and r["generated_text"] == expl.generated
        np.testing.assert_allclose(r["probabilities"], expl.probabilities, rtol=1e-5)
        for m in ("grad_x_input", "attnlrp"):
            np.testing.assert_allclose(np.asarray(r[f"attribution_{m}"]), expl.attributions[m], rtol=1e-4, atol=1e-6)


def _same_outputs(a, b):
    for name in ("examples.parquet", "top_activations.parquet", "factors.parquet"):
        assert pq.read_table(a / name).equals(pq.read_table(b / name)), name
    fa, fb = np.load(a / "factors.npz"), np.load(b / "factors.npz")
    assert fa.files == fb.files
    for k in fa.files:
        np.testing.assert_array_equal(fa[k], fb[k])


def test_interrupted_run_resumes_to_the_same_files(explained, tiny, corpus_file, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lens", "corpus", "--model", str(tiny[1]), "--prompts", str(corpus_file), "--out",
           str(out), "--top-k", str(TOP_K), "--factors", str(FACTORS), *map(str, GENERATE)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    from lens.corpus.factors import StreamingNMF

    # interrupt as soon as the first shard is recorded (its NMF state is written last): the other 49
    # shards take far longer than this loop's 2 ms to finish
    state, deadline = out / "state", time.time() + 300
    while time.time() < deadline and p.poll() is None and not (state / "nmf.npz").is_file():
        time.sleep(0.002)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    log = state / "ray.log"
    assert p.returncode == 130, err + (log.read_text(errors="replace")[-3000:] if log.is_file() else "")
    done = StreamingNMF.load(state, FACTORS).shards_done
    assert 1 <= done < 50 and not (out / "top_activations.parquet").exists()
    code, _, err = _corpus(tiny[1], corpus_file, out, *GENERATE)
    assert code == 0, err
    assert f"({done} done before)" in err
    _same_outputs(out, explained)


def test_two_node_cluster_gives_identical_outputs(profiled, tiny, corpus_file, tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out = tmp_path / "out"
        code, _, err = _corpus(tiny[1], corpus_file, out, "--batch-size", 16, "--ray-address", cluster.address,
                               "--actors", 2, "--cpus-per-actor", 1)
        assert code == 0, err
        assert "by 2 actors on 2 nodes" in err
        _same_outputs(out, profiled)
    finally:
        cluster.shutdown()


def test_prompt_formats(tmp_path):
    texts = ["first prompt", "", "a \"quoted\", comma", "ünïcode ✓"]
    (tmp_path / "p.txt").write_text("\n".join(texts) + "\n")
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(texts)))
    table = pa.table({"id": list(range(4)), "text": texts})
    pq.write_table(table, tmp_path / "p.parquet")
    import pyarrow.csv as pcsv
    pcsv.write_csv(table, tmp_path / "p.csv")
    ds = tmp_path / "saved"  # the layout datasets.Dataset.save_to_disk writes
    ds.mkdir()
    with pa.ipc.new_stream(ds / "data-00000-of-00001.arrow", table.schema) as w:
        w.write_table(table)
    (ds / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    want = ([0, 2, 3], ["first prompt", "a \"quoted\", comma", "ünïcode ✓"])
    for name in ("p.txt", "p.jsonl", "p.parquet", "p.csv", "saved"):
        assert read_prompts(tmp_path / name) == want, name


def test_a_csv_cell_larger_than_a_read_block(tmp_path):
    """pyarrow reads CSV in 1 MB blocks and refused a 10 MB cell ("straddling object")."""
    big = "word " * 2_000_000
    (tmp_path / "big.csv").write_text(f"text\nshort\n\"{big}\"\nlast\n")
    assert read_prompts(tmp_path / "big.csv") == ([0, 1, 2], ["short", big, "last"])


def test_ctrl_c_while_ray_starts(tiny, corpus_file, tmp_path):
    """An interrupt as Ray starts (where one exited 1 with no message): "lens: interrupted", exit 130."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lens", "corpus", "--model", str(tiny[1]), "--prompts", str(corpus_file), "--out",
           str(out), "--top-k", str(TOP_K), "--factors", str(FACTORS)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not (out / "state" / "ray.log").exists():
        time.sleep(0.01)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and err.strip().endswith("lens: interrupted"), err


def test_a_killed_driver_leaves_no_ray_process(tiny, corpus_file, tmp_path):
    """SIGKILL of `lens corpus` (no clean-up runs): the local Ray it started is gone soon after,
    agents included (Ray's own fate-sharing left ray::DashboardAgent and ray::RuntimeEnvAgent)."""
    import psutil

    cmd = [sys.executable, "-m", "lens", "corpus", "--model", str(tiny[1]), "--prompts", str(corpus_file), "--out",
           str(tmp_path / "out"), "--top-k", str(TOP_K), "--factors", str(FACTORS), *map(str, GENERATE)]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver, seen, deadline = psutil.Process(p.pid), {}, time.time() + 120
    while time.time() < deadline and p.poll() is None:  # until the actor runs: Ray fully started
        for c in driver.children(recursive=True):
            seen.setdefault(c.pid, c)
        if any("Profiler" in " ".join(c.cmdline()) or "MapWorker" in c.name() for c in seen.values()
               if c.is_running()) and len(seen) > 5:
            break
        time.sleep(0.05)
    time.sleep(1)
    for c in driver.children(recursive=True):
        seen.setdefault(c.pid, c)
    assert p.poll() is None and any("raylet" in c.name() for c in seen.values() if c.is_running())
    p.kill()
    p.wait()
    _, alive = psutil.wait_procs(list(seen.values()), timeout=20)
    alive = [c for c in alive if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [c.name() for c in alive]


def test_topk_merge_is_exact_with_ties():
    """Many exact ties: the merged partial results equal a sort by (-value, example, position)."""
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 4, size=(300, 40)).astype(np.float32)
    ex, pos = np.repeat(np.arange(30), 10), np.tile(np.arange(10), 30)
    parts = [T.of_tokens(acts[s:s + 100], ex[s:s + 100], pos[s:s + 100], 7) for s in (200, 0, 100)]
    top = T.TopK.empty(40, 7)
    for p in parts:
        top = top.merge(p)
    for u in range(40):
        want = sorted(zip(-acts[:, u], ex, pos))[:7]
        assert list(zip(-top.values[u], top.examples[u], top.positions[u])) == want


def test_shard_tokens_are_in_example_order():
    """A shard's prompts come sorted by length; its tokens go to the top-k in (example, position)
    order, the order ties are broken in, so tied values rank as brute force ranks them."""
    from lens.corpus.worker import token_rows

    acts = [np.ones((1, n, 2), np.float32) for n in (4, 2, 3)]               # every value tied
    rows, ex, pos = token_rows(acts, [7, 3, 5], include_first=False)
    assert ex.tolist() == [3, 5, 5, 7, 7, 7] and pos.tolist() == [1, 1, 2, 1, 2, 3]
    top = T.of_tokens(rows, ex, pos, 2)
    assert top.examples[0].tolist() == [3, 5] and top.positions[0].tolist() == [1, 1]


BAD = [
    (["--prompts", "missing.txt"], "no such file"),
    (["--prompts", "bad.jsonl"], "line 2: not JSON"),
    (["--prompts", "nocol.csv"], "no 'text' column"),
    (["--prompts", "p.txt", "--ray-address", "127.0.0.1:9"], "cannot reach a Ray cluster"),
    (["--prompts", "p.txt", "--out", "foreign"], "holds no lens corpus run"),
    (["--prompts", "p.txt", "--factors", "-1"], "factors must be"),
    (["--prompts", "p.txt", "--method", "contrastive"], "invalid choice"),
    (["--prompts", "nul.txt"], "prompt 0: the prompt holds a NUL character"),
    (["--prompts", "deep.jsonl"], "line 1: JSON lens cannot read"),
    (["--prompts", "bigint.jsonl"], "line 1: JSON lens cannot read"),
    (["--prompts", "p.txt", "--cpus-per-actor", "inf"], "--cpus-per-actor must be a positive number"),
    (["--prompts", "p.txt", "--cpus-per-actor", "nan"], "--cpus-per-actor must be a positive number"),
    (["--prompts", "p.txt", "--cpus-per-actor", "4096"], "--cpus-per-actor 4096 is more than any Ray node has"),
    (["--prompts", "p.txt", "--actors", "100000"], "100000 actors of 1 CPUs do not fit"),
    (["--prompts", "p.txt", "--out", "/proc/x"], "cannot write /proc/x"),
    (["--prompts", "p.txt", "--out", "/sys/x"], "cannot write /sys/x"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[b[1] for b in BAD])
def test_bad_input(tiny, tmp_path, args, message):
    (tmp_path / "p.txt").write_text("a prompt\n")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    (tmp_path / "nocol.csv").write_text("prompt\nhello\n")
    (tmp_path / "nul.txt").write_text("a\x00b\n")
    (tmp_path / "deep.jsonl").write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    (tmp_path / "bigint.jsonl").write_text('{"text": "a", "n": ' + "9" * 5000 + "}\n")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    full = ["--out", "out"] + args if "--out" not in args else args
    p = subprocess.run([sys.executable, "-m", "lens", "corpus", "--model", str(tiny[1]), *full], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], p.stderr
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    assert not any(x in p.stderr for x in ("Traceback", "internal error"))


def test_without_the_corpus_extra(tiny, corpus_file, tmp_path):
    """Ray missing: one line naming the extra, exit 2, nothing written."""
    code = ("import sys; sys.modules['ray'] = None; from lens.cli import main; "
            f"sys.exit(main(['corpus', '--model', {str(tiny[1])!r}, '--prompts', {str(corpus_file)!r}, "
            f"'--out', {str(tmp_path / 'out')!r}]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "lens: error: lens corpus needs the corpus extra: pip install 'lens-explain[corpus]' (missing ray)"]
    assert not (tmp_path / "out").exists()


def test_other_arguments_refuse_an_existing_run(profiled, tiny, corpus_file):
    before = {p.name: p.stat().st_mtime_ns for p in profiled.iterdir()}
    code, _, err = _corpus(tiny[1], corpus_file, profiled, "--batch-size", 8)
    assert code == 2 and "holds a run with other arguments (settings differ)" in err
    assert {p.name: p.stat().st_mtime_ns for p in profiled.iterdir()} == before
