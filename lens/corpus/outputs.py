"""What a corpus run writes: examples and top activations as parquet, each neuron's and factor's top
contexts painted, the factors' loadings."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import savez_atomic, write_atomic
from ..settings import CorpusSettings
from . import topk as T
from .worker import window


REPORT_NEURONS_PER_LAYER = 4     # most strongly firing neurons of each layer shown in the report
REPORT_NEURONS_PER_FACTOR = 4    # and each factor's top-loading neurons

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
