"""`Model`: one exported folder's ORT session (opened on a thread), tokenizer and manifest, and the
graph call everything else goes through (`session_run`: logits, the KV cache, any tap)."""
from __future__ import annotations

import copy
import functools
import os
from concurrent.futures import Future
from threading import Thread

import numpy as np

from .. import hooks
from ..errors import LensError, ModelFolderError
from ..store import ModelFolder
from . import intervene
from .generation import Generating
from .masked import Masking
from .prompts import Prompts
from .results import Trace, TraceWriter


PREFILL_BLOCK = 512  # prompt positions per graph call (same values; memory stays linear in the length)


def _providers(preferred=None) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = preferred or ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


def open_session(path, opts, providers) -> Future:
    """An ONNX Runtime session built on a thread: ORT releases the GIL while it reads and prepacks the
    weights (~1 s for SmolLM2), so a caller's imports and set-up overlap it."""
    import onnxruntime as ort

    future: Future = Future()

    def build():
        try:
            future.set_result(ort.InferenceSession(str(path), opts, providers=providers))
        except BaseException as e:  # handed to the caller of result()
            future.set_exception(e)

    Thread(target=build, name="lens-open-session").start()  # not a daemon: exiting mid-build aborts ORT
    return future


def load(name_or_path: str | os.PathLike, models_dir: str | os.PathLike | None = None,
         providers: list[str] | None = None, add_bos: bool | None = None, verify: bool | str = True,
         threads: int | None = None, session: bool = True) -> Model:
    """Open an exported model (a folder, or a name in the model store) for generation and tracing.

    `add_bos` overrides the manifest's choice of prepending the BOS token to prompts; `verify="full"`
    hashes every file (by default only files whose size or mtime changed since the last check);
    `threads` caps ONNX Runtime's threads (default: one per core); `session=False` opens only the
    tokenizer and manifest (a corpus driver tokenizes; its actors run the model)."""
    _check_load_arguments(providers, add_bos, verify, threads)
    folder = ModelFolder.resolve(name_or_path, models_dir)
    return Model(folder, providers=providers, add_bos=add_bos, manifest_data=folder.read_manifest(verify=verify),
                 threads=threads, session=session)


def _check_load_arguments(providers, add_bos, verify, threads) -> None:
    """The API's arguments, checked by name before anything opens (`add_bos="no"` is not true)."""
    import onnxruntime as ort

    if add_bos is not None and not isinstance(add_bos, bool):
        raise LensError(f"add_bos must be True, False or None, not {add_bos!r}")
    if verify not in (True, False, "full") or (verify in (0, 1) and not isinstance(verify, bool)):
        raise LensError(f"verify must be True, False or 'full', not {verify!r}")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise LensError(f"threads must be a positive integer or None, not {threads!r}")
    if providers is not None:
        if isinstance(providers, str) or not all(isinstance(p, str) for p in providers):
            raise LensError(f"providers must be a list of ONNX Runtime execution provider names, not {providers!r}")
        unknown = [p for p in providers if p not in ort.get_all_providers()]
        if unknown:
            raise LensError(f"unknown execution provider {unknown[0]!r} (available here: "
                            f"{', '.join(ort.get_available_providers())})")


class Model(Prompts, Generating, Masking):
    """An exported model: one ORT session, its tokenizer and its manifest."""
    _edits = None  # the interventions this model runs with (`intervened`), None: the model as exported

    def __init__(self, folder: ModelFolder | str | os.PathLike, providers: list[str] | None = None,
                 manifest_data: dict | None = None, add_bos: bool | None = None, threads: int | None = None,
                 session: bool = True):
        """`manifest_data` skips reading the manifest: the exporter validates before writing it."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.store = folder if isinstance(folder, ModelFolder) else ModelFolder(folder)
        self.folder = self.store.path
        if manifest_data:  # an export in progress: its manifest is not written yet
            self.store.__dict__["manifest"] = manifest_data
        self.manifest = m = self.store.manifest
        self.name = m.get("name") or self.folder.name
        self.architecture = m["architecture"]
        self.n_layers, self.d_model, self.d_mlp = m["n_layers"], m["d_model"], m["d_mlp"]
        self.n_heads, self.n_ctx, self.d_vocab = m["n_heads"], m["n_ctx"], m["d_vocab"]
        eos = m.get("eos_token_id")  # an id, or a list of ids
        self.eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        self.bos_token_id = m.get("bos_token_id")
        self.add_bos = bool(m.get("add_bos", False) if add_bos is None else add_bos)
        if self.add_bos and self.bos_token_id is None:
            raise LensError(f"{self.name} has no BOS token to prepend")
        try:
            self.tokenizer = Tokenizer.from_file(str(self.store.tokenizer))
        except Exception as e:  # a corrupt file that still matches a (tampered) manifest
            raise self._unopenable(e) from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:  # several models on one machine (corpus actors) each take a share of the cores
            opts.intra_op_num_threads = int(threads)
        self._options, self._provider_list = opts, _providers(providers)
        self._opening = open_session(self.store.graph, opts, self._provider_list) if session else None
        self._session = None
        self._past_names = [f"past_key_values.{l}.{kv}" for l in range(self.n_layers) for kv in ("key", "value")]
        self._present_names = [f"present.{l}.{kv}" for l in range(self.n_layers) for kv in ("key", "value")]
        self.taps = hooks.all_taps(self.n_layers)
        # attention probabilities, in graphs exported with --attention-taps (session_run's `outputs`, `attention`)
        self.attention_taps = [h for h in hooks.attention_taps(self.n_layers) if h in (m.get("taps") or {})]
        # each head's output (hooks.z) where the export found it: session_run's `outputs`, head interventions
        self.head_taps = [h for h in hooks.head_taps(self.n_layers) if h in (m.get("taps") or {})]
        self._kv_shape = (m["n_kv_heads"], m["d_head"])
        self.dtype = m.get("dtype", "float32")  # of the graph's weights, activations and KV cache (`lens export --dtype`)
        self._special_ids = {i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special}

    def __repr__(self):
        return (f"<lens Model {self.name!r}: {self.n_layers} layers x {self.d_model}, "
                f"{self.providers[0] if self.providers else 'no session'}>")

    def _unopenable(self, e: Exception) -> ModelFolderError:
        return ModelFolderError(f"{self.folder}: cannot open the model ({str(e).splitlines()[0][:200]}); "
                                f"re-export with `lens export --force`")

    @property
    def session(self):
        """The ONNX Runtime session (None when opened with session=False); waits for it the first time."""
        opening = self._opening
        if opening is not None:
            try:
                self._session = opening.result()
            except Exception as e:  # raised again at every use: the model stays unusable
                raise self._unopenable(e) from None
            self._opening = None
            self._check_graph(self._session)
        return self._session

    def _check_graph(self, session) -> None:
        """The manifest's shape against the graph's: a tampered manifest (5 layers for a 2-layer graph)
        would otherwise fail inside ONNX Runtime at the first run."""
        names = {o.name for o in session.get_outputs()}
        want = set(self._present_names) | {"logits"}
        if not want <= names or f"present.{self.n_layers}.key" in names:
            layers = sum(f"present.{l}.key" in names for l in range(len(names)))
            problem = ValueError(f"the manifest says {self.n_layers} layers, the graph has {layers}")
            self._session, self._opening = None, Future()
            self._opening.set_exception(problem)  # raised again at every use: the model stays unusable
            raise self._unopenable(problem)

    def intervened(self, interventions) -> Model:
        """This model with `interventions` (`lens.interventions`: ablate, scale, steer, patch, remove_factor)
        applied inside its graph at every call: generation, tracing (the taps show the edited values),
        masking. The graph is rewritten once per set of hooks edited; the weights are shared. A bad
        intervention (unknown hook, a neuron out of range, a vector of the wrong width) is a LensError."""
        edits = self.editable(interventions)
        if not edits:
            return self
        if self.session is None:
            raise LensError(f"{self.name} was opened without a session (load(..., session=False)): tokens only")
        key = tuple(edits.hooks)
        sessions = self.__dict__.setdefault("_edit_sessions", {})
        if key not in sessions:  # the graph's edit inputs depend on the hooks only, not on the values
            sessions[key] = intervene.open_session(self.folder, edits, self.dtype == "float16", self._options,
                                                   self._provider_list)
        clone = copy.copy(self)
        clone.__dict__.pop("_inputs", None)
        clone._session, clone._opening, clone._edits = sessions[key], None, edits
        return clone

    def mean_activation(self, hook: str, text, skip_first: bool = True) -> np.ndarray:
        """[width] the mean of a tapped hook's values over a reference text's positions (mean ablation:
        `interventions.ablate(hook, value=model.mean_activation(hook, text))`); the first position, where
        attention-sink activations are hundreds of times larger, is left out unless `skip_first` is False."""
        from ..interventions import Intervention

        tap = self.editable([Intervention(hook)]).hooks[0]   # checked; resid_pre of a layer > 0 is the tap before
        ids = self.prompt_ids(text)
        if skip_first and len(ids) < 2:
            raise LensError("a mean over a reference text needs at least two tokens (the first is left out)")
        values = self.session_run(ids, outputs=[tap], logits_from=-1)[tap][0]     # [n, width]
        return values[1 if skip_first else 0:].mean(0)

    def editable(self, interventions):
        """`interventions` checked against this model and its graph (`lens.interventions.Edits`): a
        LensError before any work for a bad one, or for a hook the graph does not tap (heads in a graph
        exported before lens 0.3)."""
        from ..interventions import Dims, Edits

        edits = Edits(interventions, Dims.of(self.manifest))
        tapped = set(self.taps) | set(self.head_taps)
        absent = [h for h in edits.hooks if h not in tapped]
        if absent:
            raise LensError(f"the ONNX graph of {self.name} has no tap {absent[0]}: its export found no such tensor "
                            f"(head taps need an export by lens >= 0.3: `lens export --force`); `lens patch` and "
                            f"the attributions edit heads in the JAX port")
        return edits

    @functools.cached_property
    def providers(self) -> list[str]:
        return self.session.get_providers() if self.session else []

    @functools.cached_property
    def _inputs(self) -> set[str]:
        if not self.session:
            return set()
        # inputs with a default (logits_from) are listed as overridable initializers, not inputs
        return {i.name for i in [*self.session.get_inputs(), *self.session.get_overridable_initializers()]}

    # ---------------------------------------------------------------- engine
    def session_run(self, token_ids, past=None, taps: bool = False, attention_mask=None, outputs=(),
                    position_ids=None, logits_from: int = 0) -> dict:
        """One graph call on token_ids [seq] or [batch, seq] after an optional cache; raw outputs by
        name (logits, the cache, every tap with `taps`, and the taps named in `outputs`).
        `attention_mask` [batch, past + seq] (1 = attend) defaults to all ones; `position_ids`
        [batch, seq] default to past, past + 1, ... whatever the mask. `present` in the result is the
        cache to pass as `past` next. `logits_from`: logits of this call's positions from this one on
        (negative: from the end; -1 the last only), the unembedding skipped at the others (graphs
        exported by lens >= 0.3; older graphs compute them all and the result is sliced)."""
        if self.session is None:
            raise LensError(f"{self.name} was opened without a session (load(..., session=False)): tokens only")
        ids = np.asarray(token_ids, dtype=np.int64)
        ids = ids.reshape(1, -1) if ids.ndim == 1 else ids
        batch, seq = ids.shape
        n_past = 0 if past is None else past[0].shape[2]
        feed = {"input_ids": ids}
        if attention_mask is not None and "attention_mask" not in self._inputs:
            raise LensError(f"{self.name}'s graph takes no attention mask")
        if "attention_mask" in self._inputs:
            feed["attention_mask"] = (np.ones((batch, n_past + seq), dtype=np.int64) if attention_mask is None
                                      else np.asarray(attention_mask, dtype=np.int64))
        if "position_ids" in self._inputs:
            default = np.broadcast_to(np.arange(n_past, n_past + seq, dtype=np.int64), (batch, seq))
            given = default if position_ids is None else position_ids
            feed["position_ids"] = np.array(given, np.int64).reshape(batch, seq)
        if past is None:
            past = [np.zeros((batch, self._kv_shape[0], 0, self._kv_shape[1]), self.dtype)] * len(self._past_names)
        feed.update(zip(self._past_names, past))
        if self._edits:  # every edited hook's rows at this call's positions (a masked pass skips some)
            at = (np.broadcast_to(np.arange(n_past, n_past + seq), (batch, seq)) if position_ids is None
                  else np.asarray(position_ids, np.int64).reshape(batch, seq))
            feed.update(intervene.feed(self._edits, at))
        graph_slices = hooks.LOGITS_FROM in self._inputs                  # older graphs compute every position
        if logits_from and graph_slices:
            feed[hooks.LOGITS_FROM] = np.asarray([logits_from], np.int64)
        names = ["logits", *self._present_names] + (self.taps if taps else [t for t in outputs if t in self.taps])
        names += [t for t in outputs if t in self.attention_taps or t in self.head_taps]
        values = self.session.run(names, feed)
        out = dict(zip(names, values))
        if logits_from and not graph_slices:
            out["logits"] = out["logits"][:, logits_from:]
        out["present"] = values[1:1 + len(self._present_names)]
        return out

    def mlp_activations(self, token_ids, layers: list[int]) -> np.ndarray:
        """MLP neuron activations [batch, len(layers), seq, d_mlp] of a batch of sequences [batch, seq]
        in one graph call. Pad short sequences at the end: causal attention keeps padding out of
        every real position."""
        ids = np.asarray(token_ids, dtype=np.int64)
        names = [hooks.mlp_post(l) for l in layers]
        out = self.session_run(ids, taps=False, outputs=names, logits_from=-1)
        return np.stack([out[n] for n in names], axis=1)

    def run(self, token_ids) -> Trace:
        """One full-sequence pass with every tap, for all positions."""
        ids = np.asarray(self.prompt_ids(token_ids), dtype=np.int64)
        if not 0 < len(ids) <= self.n_ctx:
            raise LensError(f"sequence of {len(ids)} tokens; this model takes 1 to {self.n_ctx}")
        trace = TraceWriter(self, len(ids))
        self.prefill(ids, taps=True, each=trace.add)
        return trace.trace()

    def attention(self, token_ids) -> np.ndarray:
        """[L, H, n, n] every layer's attention probabilities over token_ids [n] (a graph exported with
        `lens export --attention-taps`), in blocks of PREFILL_BLOCK queries, each reading the cache."""
        if not self.attention_taps:
            raise LensError(f"{self.name} was exported without attention taps (lens export --attention-taps)")
        ids = np.asarray(token_ids, dtype=np.int64)
        n = len(ids)
        out = np.zeros((self.n_layers, self.n_heads, n, n), np.float32)
        past = None
        for b0 in range(0, n, PREFILL_BLOCK):
            b1 = min(n, b0 + PREFILL_BLOCK)
            res = self.session_run(ids[b0:b1], past, outputs=self.attention_taps, logits_from=-1)
            for l, name in enumerate(self.attention_taps):
                out[l, :, b0:b1, :b1] = res[name][0]
            past = res["present"]
        return out

    def prefill(self, token_ids, past=None, taps: bool = False, logits_from: int = 0, each=None) -> dict:
        """`session_run` over a sequence (a prompt, or one generated token) in blocks of PREFILL_BLOCK
        positions, each reading the cache of the ones before (and `past`): attention then holds
        [heads, block, seq] scores rather than [heads, seq, seq] (an 8,000-token prompt took 15 GB in
        one call). `each(result)` is called on every block's outputs; the last block's are returned
        (its `present` is the whole cache)."""
        ids = np.asarray(token_ids, dtype=np.int64)
        res: dict = {}
        for b0 in range(0, len(ids), PREFILL_BLOCK):
            res = self.session_run(ids[b0:b0 + PREFILL_BLOCK], past, taps=taps, logits_from=logits_from)
            past = res["present"]
            if each is not None:
                each(res)
        return res

    def _trace(self, out: dict) -> Trace:
        """The Trace of one call's outputs (batch row 0)."""
        trace = TraceWriter(self, out[hooks.EMBED].shape[1])
        trace.add(out)
        return trace.trace()
