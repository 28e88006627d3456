"""The corpus driver: plan shards, hand them to a Ray Data actor pool, and fold what comes back into
the outputs. The driver holds one shard's results at a time, never the corpus's activations.

DIR/
  examples.parquet         one row per prompt: text, tokens, generated text, attributions
  top_activations.parquet  every profiled neuron's top-k activations over the corpus (exact)
  factors.npz, factors.parquet   streaming-NMF factors: loadings, top contexts, top neurons
  report.html              pick a neuron or a factor, read its top contexts painted
  state/                   per-shard results and the NMF's running state: a re-run skips finished shards
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import LensError, require
from ..files import savez_atomic, write_atomic
from ..settings import CorpusSettings
from . import topk as T
from .factors import StreamingNMF
from .prompts import read_prompts
from .worker import Contexts, Profiler, window

STATE_VERSION = 1
REPORT_NEURONS_PER_LAYER = 4     # most strongly firing neurons of each layer shown in the report
REPORT_NEURONS_PER_FACTOR = 4    # and each factor's top-loading neurons
SORT_BLOCK = 16                  # shards whose prompts are sorted by length together


@dataclass
class _Run:
    """Everything the passes share: the model (tokenizer and manifest), the prompts, the plan."""
    model: object
    settings: CorpusSettings
    layers: list[int]
    examples: list[int]                 # row index in the prompt file of each prompt
    texts: dict[int, str]               # example -> text
    prompt_ids: dict[int, list[int]]    # example -> token ids (cut to --max-tokens)
    shards: list[list[int]]             # examples of each shard
    out: Path
    state: Path

    @property
    def n_units(self) -> int:
        return len(self.layers) * self.model.d_mlp


def run_corpus(model: str, prompts, out, settings: CorpusSettings | None = None, models_dir=None,
               ray_address: str | None = None, actors: int = 1, cpus_per_actor: float | None = None,
               progress: bool = True, say=lambda msg: None) -> Path:
    """Profile (and optionally generate and attribute) every prompt of `prompts`; write DIR's files.
    Returns DIR. Runs on a local Ray unless `ray_address` names a cluster to join."""
    require(("ray", "ray.data", "pyarrow"), "lens corpus", "corpus")
    if actors < 1:
        raise LensError("--actors must be >= 1")
    if cpus_per_actor is not None and not cpus_per_actor > 0:
        raise LensError("--cpus-per-actor must be > 0")
    if ray_address:
        _check_reachable(ray_address)
    run = _plan(model, models_dir, prompts, Path(out), settings or CorpusSettings())
    with _Pool(ray_address, actors, cpus_per_actor, run.state / "ray.log") as pool:
        nmf = _profile(run, pool, progress, say)
        top = _merge([np.load(run.state / f"topk-{i:06d}.npz") for i in range(len(run.shards))], run.n_units,
                     run.settings.top_k)
        _write_top_activations(run.out / "top_activations.parquet", top, run.layers, run.model.d_mlp)
        _concat_examples(run.out / "examples.parquet",
                         [run.state / f"examples-{i:06d}.parquet" for i in range(len(run.shards))], SORT_BLOCK)
        full_ids = _full_ids(run.out / "examples.parquet")
        _read_contexts(run, pool, full_ids, top, nmf.loadings, say)
    _finish(run, full_ids, top, nmf.loadings, say)
    return run.out


def _plan(model, models_dir, prompts, out: Path, s: CorpusSettings) -> _Run:
    """Everything checked before any work: the model, the layers, every prompt, the output folder."""
    from ..analysis.neurons import select_layers
    from ..runtime import load

    m = load(model, models_dir, session=False)  # the driver tokenizes; the actors run the model
    layers = select_layers(m.n_layers, s.layers)
    examples, texts = read_prompts(prompts)
    ids = _tokenize(m, examples, texts, s)
    if s.factors and s.factors > len(layers) * m.d_mlp:
        raise LensError(f"--factors {s.factors} is more than the {len(layers) * m.d_mlp} neurons profiled")
    source = Path(prompts)
    config = dict(version=STATE_VERSION, model=m.name,
                  model_files=_digest(json.dumps(m.manifest.get("files"), sort_keys=True).encode()),
                  prompts=_digest(source.read_bytes()) if source.is_file() else str(source.resolve()),
                  settings=asdict(s), layers=layers)
    state = _prepare(out, config)
    return _Run(m, s, layers, examples, dict(zip(examples, texts)), dict(zip(examples, ids)),
                plan_shards(examples, [len(i) for i in ids], s.batch_size), out, state)


def _profile(run: _Run, pool: _Pool, progress: bool, say) -> StreamingNMF:
    """Pass 1: generate, attribute, profile every shard not done before; shards come back in order,
    so the streaming NMF sees the same stream on every run."""
    s, state, shards = run.settings, run.state, run.shards
    nmf = StreamingNMF.load(state, s.factors)
    done = nmf.shards_done
    say(f"profiling {len(run.examples)} prompts in {len(shards)} shards ({done} done before)")
    jobs = {i: dict(examples=sh, token_ids=[run.prompt_ids[e] for e in sh]) for i, sh in enumerate(shards) if i >= done}
    if not jobs:
        return nmf
    pool.start()  # before the progress bar: Ray's start redirects the terminal's stderr
    t, busy, nodes = time.perf_counter(), 0.0, set()
    bar = _bar(len(run.examples), sum(map(len, shards[:done])), progress)
    for shard, res in pool.map(Profiler, (str(run.model.folder), run.layers, _worker_settings(s), s.factors), jobs):
        nodes.add(res["node"])
        busy += res["seconds"]
        _write_examples(state / f"examples-{shard:06d}.parquet", run.model, run.texts, res, s)
        savez_atomic(state / f"topk-{shard:06d}.npz", res["topk"])
        nmf.learn(res.get("nmf_rows"), shard)                    # records the shard as done, last
        bar.update(len(res["examples"]))
    bar.close()
    n, took = sum(len(j["examples"]) for j in jobs.values()), time.perf_counter() - t
    say(f"{n} prompts profiled in {took:.1f} s ({n / took:.1f} prompts/s) by {pool.actors} "
        f"actor{'s' * (pool.actors > 1)} on {len(nodes)} node{'s' * (len(nodes) > 1)}, busy {busy:.1f} s")
    if s.factors and nmf.model is None:
        raise LensError("no token to factorise: every prompt is " + ("empty" if s.include_first else
                        "a single token (first positions are left out; --include-first counts them)"))
    return nmf


def _read_contexts(run: _Run, pool: _Pool, full_ids: dict, top: T.TopK, loadings, say) -> None:
    """Pass 2: each token's factor values, and the activations around the contexts the report paints."""
    paint = {}  # example -> (unit, example, position) of the report's contexts in it
    for c in _paint_units(top, loadings, run.layers, run.model.d_mlp):
        paint.setdefault(c[1], []).append(c)
    jobs = {i: dict(examples=sh, token_ids=[full_ids[e] for e in sh], paint=sum((paint.get(e, []) for e in sh), []))
            for i, sh in enumerate(run.shards) if not (run.state / f"contexts-{i:06d}.npz").exists()}
    if not jobs:
        return
    say(f"reading factors and report contexts ({len(jobs)} shards)")
    t, busy = time.perf_counter(), 0.0
    args = (str(run.model.folder), run.layers, loadings, run.settings.top_k, run.settings.include_first)
    for shard, res in pool.map(Contexts, args, jobs):
        _save_contexts(run.state / f"contexts-{shard:06d}.npz", res)
        busy += res["seconds"]
    say(f"pass 2 took {time.perf_counter() - t:.1f} s, actors busy {busy:.1f} s")


def _finish(run: _Run, full_ids: dict, top: T.TopK, loadings, say) -> None:
    """The factors' files and the report, from the shards' saved results."""
    s = run.settings
    ctx = [np.load(run.state / f"contexts-{i:06d}.npz") for i in range(len(run.shards))]
    ftop, fwindows = None, {}
    if s.factors:
        ftop = _merge([{k: c[f"topk_{k}"] for k in ("values", "examples", "positions")} for c in ctx],
                      s.factors, s.top_k)
        fwindows = _factor_windows(ctx, ftop, full_ids)
        _write_factors(run.out, loadings, ftop, run.layers, run.model.d_mlp)
    say("writing the report")
    from ..viz.corpus import corpus_report
    corpus_report(run.out / "report.html", model=run.model.name, examples_path=run.out / "examples.parquet",
                  top=top, layers=run.layers, d_mlp=run.model.d_mlp, windows=_windows(ctx), factor_top=ftop,
                  factor_windows=fwindows, loadings=loadings, settings=s)


# ------------------------------------------------------------------ input
def plan_shards(examples: list[int], lengths: list[int], batch_size: int) -> list[list[int]]:
    """Shards of `batch_size` prompts. Within each block of SORT_BLOCK shards, prompts are sorted by
    length, so a shard's padded model call wastes little on padding (300 docstring sentences in
    shards of 16: padded tokens fell from 2.57x to 1.14x the real ones; the run from 72 s to 50 s)
    while the stream the NMF learns from still moves through the file in order."""
    shards, block = [], SORT_BLOCK * batch_size
    for b in range(0, len(examples), block):
        idx = sorted(range(b, min(b + block, len(examples))), key=lambda i: (lengths[i], i))
        shards += [[examples[i] for i in idx[j:j + batch_size]] for j in range(0, len(idx), batch_size)]
    return shards


def _tokenize(m, examples, texts, s: CorpusSettings) -> list[list[int]]:
    """Each prompt's token ids, cut to --max-tokens and to what the context leaves for generation."""
    keep = min(s.max_tokens, m.n_ctx - s.max_new_tokens)
    if keep < 1:
        raise LensError(f"--max-new-tokens {s.max_new_tokens} leaves no room in the model's context of {m.n_ctx}")
    ids = []
    for e, t in zip(examples, texts):
        try:
            ids.append(m.prompt_ids(t)[:keep])
        except LensError as err:
            raise LensError(f"prompt {e}: {err}") from None
    return ids


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _prepare(out: Path, config: dict) -> Path:
    """DIR/state with this run's config; a DIR holding anything else is refused, never cleared."""
    state = out / "state"
    saved = state / "config.json"
    if out.exists() and not out.is_dir():
        raise LensError(f"{out} is a file; --out takes a folder")
    if out.is_dir() and any(out.iterdir()) and not saved.is_file():
        raise LensError(f"{out} is not empty and holds no lens corpus run; give a new or empty folder")
    if saved.is_file():
        try:
            old = json.loads(saved.read_text())
        except (OSError, ValueError):
            raise LensError(f"{saved} is unreadable; delete {out} or give another --out") from None
        new = json.loads(json.dumps(config))  # as it would read back (tuples become lists)
        if old != new:
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise LensError(f"{out} holds a run with other arguments ({', '.join(changed)} differ); "
                            f"give another --out, or delete it to start over")
        return state
    if not out.parent.is_dir():
        raise LensError(f"cannot write {out}: folder {out.parent} does not exist")
    state.mkdir(parents=True, exist_ok=True)
    write_atomic(saved, lambda p: p.write_text(json.dumps(config, indent=1)))
    return state


def _worker_settings(s: CorpusSettings) -> dict:
    return dict(max_new_tokens=s.max_new_tokens, methods=list(s.methods), top_k=s.top_k,
                include_first=s.include_first)


# ------------------------------------------------------------------ Ray
def _check_reachable(address: str) -> None:
    """One line, exit 2, for an address nobody answers at (ray.init would wait a minute)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise LensError(f"cannot reach a Ray cluster at {address!r} (expected HOST:PORT of its head node)") from None


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Send what Ray's C++ core writes to file descriptor 2 into `path`; lens's own lines (written
    through sys.stderr) still reach the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    terminal = sys.stderr
    try:
        os.dup2(log, 2)
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=terminal.encoding, errors="replace")
        yield
    finally:
        sys.stderr.flush()
        sys.stderr = terminal
        os.dup2(saved, 2)
        os.close(saved)
        os.close(log)


@contextlib.contextmanager
def _remember_sigint(pool):
    """Ctrl-C raises KeyboardInterrupt as usual, and is remembered: once in a while (seen once in the
    test suite, never reproduced alone) the exception is lost inside Ray's iterator machinery, and
    the run went on to the end; `_Pool.map` raises it again at the next shard."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        pool.interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Pool:
    """Ray (joined at `address`, else started locally on first use, and stopped at the end) and its
    actor pools: `map` runs jobs on `actors` copies of an actor class, each holding one model."""

    def __init__(self, address: str | None, actors: int, cpus_per_actor: float | None, log: Path):
        self.address, self.actors, self.cpus, self.log = address, actors, cpus_per_actor, log
        self.ray, self._stack = None, contextlib.ExitStack()
        self.interrupted = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stack.close()  # stops the Ray we started, then gives the terminal its stderr back

    def start(self):
        if self.ray is not None:
            return
        self._stack.enter_context(_stderr_to(self.log))  # Ray's own log lines go to a file, not the terminal
        self._stack.enter_context(_remember_sigint(self))
        import ray
        import ray.data

        for name in ("ray", "ray.data"):  # lens prints its own stages and progress bar
            logging.getLogger(name).setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.enable_operator_progress_bars = False
        ctx.execution_options.preserve_order = True
        ctx.print_on_execution_start = False
        self.ray = ray
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                      configure_logging=False)
            try:
                ray.init(address=self.address, **kw) if self.address else ray.init(**kw)
            except ConnectionError as e:
                raise LensError(f"cannot join the Ray cluster at {self.address!r}: "
                                f"{str(e).splitlines()[0][:160]}") from None
            self._stack.callback(ray.shutdown)
        if self.cpus is None:  # an equal share of the cluster's CPUs
            self.cpus = max(1.0, float(ray.cluster_resources().get("CPU", 1)) // self.actors)

    def map(self, actor_class, args: tuple, jobs: dict[int, dict]):
        """(shard, result) for each {shard: job}, in shard order; each actor is built as
        actor_class(*args, threads=its share of CPUs)."""
        import pickle

        if not jobs:
            return
        self.start()
        rows = [{"shard": int(i), "job": pickle.dumps(j, protocol=5)} for i, j in sorted(jobs.items())]
        ds = self.ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            actor_class, fn_constructor_args=args, fn_constructor_kwargs={"threads": max(1, int(self.cpus))},
            batch_size=1, compute=self.ray.data.ActorPoolStrategy(size=min(self.actors, len(rows))),
            num_cpus=self.cpus)
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
            if self.interrupted:  # a Ctrl-C whose KeyboardInterrupt something inside Ray swallowed
                raise KeyboardInterrupt
            yield int(batch["shard"][0]), pickle.loads(batch["result"][0])


def _bar(total: int, initial: int, show: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="prompt", desc="lens: corpus", file=sys.stderr, disable=not show,
                leave=False, smoothing=0.1)


# ------------------------------------------------------------------ outputs
def _merge(parts, units: int, k: int) -> T.TopK:
    top = T.TopK.empty(units, k)
    for p in parts:
        top = top.merge(T.TopK(p["values"], p["examples"], p["positions"]))
    return top


def _write_examples(path: Path, m, text_of: dict, res, s: CorpusSettings) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = dict(example=[], text=[], token_ids=[], tokens=[], n_prompt=[], generated_text=[], probabilities=[])
    methods = list(s.methods) if s.max_new_tokens else []
    for mt in methods:
        cols[f"attribution_{mt}"] = []
    for i, e in enumerate(res["examples"]):
        ids, n = res["token_ids"][i], res["n_prompt"][i]
        cols["example"].append(e)
        cols["text"].append(text_of[e])
        cols["token_ids"].append(np.asarray(ids, np.int64).tolist())
        cols["tokens"].append(m.token_strings(ids))
        cols["n_prompt"].append(n)
        cols["generated_text"].append(m.decode(ids[n:]))
        cols["probabilities"].append(np.asarray(res["probabilities"][i], np.float32).tolist())
        for mt in methods:
            a = res["attributions"][i].get(mt)
            cols[f"attribution_{mt}"].append([] if a is None else np.asarray(a, np.float32).tolist())
    types = dict(example=pa.int64(), text=pa.string(), token_ids=pa.list_(pa.int64()), tokens=pa.list_(pa.string()),
                 n_prompt=pa.int64(), generated_text=pa.string(), probabilities=pa.list_(pa.float32()),
                 **{f"attribution_{mt}": pa.list_(pa.list_(pa.float32())) for mt in methods})
    table = pa.table({k: pa.array(v, type=types[k]) for k, v in cols.items()})
    write_atomic(path, lambda p: pq.write_table(table, p))


def _concat_examples(path: Path, shards: list[Path], block: int) -> None:
    """The shards' rows in file order: the shards of one sorting block hold the same prompts, so
    each block is read, sorted by example and written in turn (one block in memory at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(p):
        writer = None
        for b in range(0, len(shards), block):
            t = pa.concat_tables([pq.read_table(f) for f in shards[b:b + block]]).sort_by("example")
            writer = writer or pq.ParquetWriter(p, t.schema)
            writer.write_table(t)
        writer.close()
    write_atomic(path, write)


def _full_ids(path: Path) -> dict[int, list[int]]:
    import pyarrow.parquet as pq
    t = pq.read_table(path, columns=["example", "token_ids"])
    return dict(zip(t.column("example").to_pylist(), t.column("token_ids").to_pylist()))


def _write_top_activations(path: Path, top: T.TopK, layers: list[int], d_mlp: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    units, k = top.values.shape
    keep = (top.examples >= 0).ravel()
    unit = np.repeat(np.arange(units), k)[keep]
    table = pa.table({
        "layer": pa.array(np.asarray(layers, np.int32)[unit // d_mlp]),
        "neuron": pa.array((unit % d_mlp).astype(np.int32)),
        "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), units)[keep]),
        "example": pa.array(top.examples.ravel()[keep]),
        "position": pa.array(top.positions.ravel()[keep]),
        "activation": pa.array(top.values.ravel()[keep]),
    })
    write_atomic(path, lambda p: pq.write_table(table, p))


def _paint_units(top: T.TopK, loadings, layers, d_mlp) -> list[tuple[int, int, int]]:
    """(unit, example, position) of every top context of the neurons the report shows."""
    units = report_neurons(top, loadings, len(layers), d_mlp)
    return [(int(u), int(e), int(p)) for u in units for e, p in zip(top.examples[u], top.positions[u]) if e >= 0]


def report_neurons(top: T.TopK, loadings, n_layers: int, d_mlp: int) -> list[int]:
    """The neurons the report offers: each layer's strongest (highest mean of its top-k), then each
    factor's top-loading ones. All neurons' top contexts are in top_activations.parquet."""
    strength = np.where(np.isfinite(top.values), top.values, 0).mean(1).reshape(n_layers, d_mlp)
    chosen = [l * d_mlp + int(n) for l in range(n_layers)
              for n in np.argsort(-strength[l], kind="stable")[:REPORT_NEURONS_PER_LAYER]]
    if loadings is not None:
        for row in loadings:
            chosen += [int(u) for u in np.argsort(-row, kind="stable")[:REPORT_NEURONS_PER_FACTOR]]
    return list(dict.fromkeys(chosen))


def _save_contexts(path: Path, res: dict) -> None:
    w = res["windows"]
    column = lambda i: np.asarray([x[i] for x in w], np.int64)  # noqa: E731
    arrays = dict(win_unit=column(0), win_example=column(1), win_position=column(2), win_start=column(3),
                  win_length=np.asarray([len(x[4]) for x in w], np.int64),
                  win_values=np.concatenate([x[4] for x in w]) if w else np.zeros(0, np.float32))
    if "topk" in res:
        arrays.update({f"topk_{k}": v for k, v in res["topk"].items()})
        arrays.update(factor_values=res["factor_values"], factor_examples=res["examples"],
                      factor_positions=res["positions"])
    savez_atomic(path, arrays)


def _windows(ctx) -> dict[tuple[int, int, int], tuple[int, np.ndarray]]:
    """{(unit, example, position): (first position, activations)} of the painted neuron contexts."""
    out = {}
    for c in ctx:
        ends = np.cumsum(c["win_length"])
        for i, (u, e, p, lo) in enumerate(zip(c["win_unit"], c["win_example"], c["win_position"], c["win_start"])):
            out[int(u), int(e), int(p)] = (int(lo), c["win_values"][ends[i] - c["win_length"][i]:ends[i]])
    return out


def _factor_windows(ctx, ftop: T.TopK, full_ids) -> dict[tuple[int, int, int], tuple[int, np.ndarray]]:
    """The same for each factor's top contexts, from the factor values pass 2 kept for every token."""
    wanted = {(int(e), int(p)) for e, p in zip(ftop.examples.ravel(), ftop.positions.ravel()) if e >= 0}
    examples = {e for e, _ in wanted}
    values = {}  # example -> [seq, k] factor values (0 at positions left out)
    for c in ctx:
        for e in examples.intersection(np.unique(c["factor_examples"]).tolist()):
            sel = c["factor_examples"] == e
            v = np.zeros((len(full_ids[e]), ftop.values.shape[0]), np.float32)
            v[c["factor_positions"][sel]] = c["factor_values"][sel]
            values[e] = v
    out = {}
    for f in range(ftop.values.shape[0]):
        for e, p in zip(ftop.examples[f], ftop.positions[f]):
            if e >= 0:
                lo, hi = window(int(p), len(full_ids[e]))
                out[f, int(e), int(p)] = (int(lo), values[int(e)][lo:hi, f])
    return out


def _write_factors(out: Path, h: np.ndarray, ftop: T.TopK, layers, d_mlp: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
                               # [k, units]
    k, n = ftop.values.shape
    order = np.argsort(-h, axis=1, kind="stable")[:, :n]                 # each factor's top neurons
    layer_of = np.asarray(layers, np.int32)[order // d_mlp]
    arrays = dict(loadings=h, layers=np.asarray(layers, np.int32), d_mlp=np.int32(d_mlp),
                  top_values=ftop.values, top_examples=ftop.examples, top_positions=ftop.positions,
                  top_neuron_layers=layer_of, top_neurons=(order % d_mlp).astype(np.int32),
                  top_loadings=np.take_along_axis(h, order, 1))
    write_atomic(out / "factors.npz", lambda p: np.savez(p, **arrays))
    table = pa.table({
        "factor": pa.array(np.repeat(np.arange(k, dtype=np.int32), n)),
        "rank": pa.array(np.tile(np.arange(1, n + 1, dtype=np.int32), k)),
        "example": pa.array(ftop.examples.ravel()), "position": pa.array(ftop.positions.ravel()),
        "value": pa.array(ftop.values.ravel()),
        "top_layer": pa.array(layer_of.ravel()), "top_neuron": pa.array(arrays["top_neurons"].ravel()),
        "loading": pa.array(arrays["top_loadings"].ravel()),
    })
    write_atomic(out / "factors.parquet", lambda p: pq.write_table(table, p))
