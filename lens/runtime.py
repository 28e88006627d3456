"""ONNX Runtime engine: opens an exported model folder, generates with a KV cache, and runs the full
sequence returning logits, every hidden state and every MLP activation as numpy arrays.

Imports only numpy, onnxruntime and tokenizers: no torch, JAX, scikit-learn or Bokeh on this path
(the attribution engine and the analyses sit on top of it, in `lens.pipeline`).
"""
from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from . import hooks, sampling, tokens
from .errors import LensError, ModelFolderError
from .store import ModelFolder


@dataclass
class Generation:
    """Prompt plus generated tokens, and the probability the model gave each generated token."""
    token_ids: np.ndarray        # [n_prompt + n_generated] int64
    n_prompt: int
    probabilities: np.ndarray    # [n_generated] p(token) from the untempered distribution
    settings: dict = field(default_factory=dict)
    trace: "Trace | None" = None  # every tap for every position, when generated with trace=True

    @property
    def generated_ids(self) -> np.ndarray:
        return self.token_ids[self.n_prompt:]


@dataclass
class Trace:
    """Everything one full-sequence pass exposes, batch dimension removed."""
    logits: np.ndarray           # [seq, d_vocab]
    hidden_states: np.ndarray    # [n_layers + 1, seq, d_model]: embeddings, then each block's output
    activations: np.ndarray      # [n_layers, seq, d_mlp]: MLP neurons after the non-linearity
    ln_final: np.ndarray         # [seq, d_model]: last block's output after the final norm


def _providers(preferred=None) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = preferred or ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in wanted if p in available] or ["CPUExecutionProvider"]


class _Opening:
    """A value made on a background thread; `result()` waits for it and re-raises its error."""

    def __init__(self, make):
        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, args=(make,), name="lens-open-session")
        self._thread.start()

    def _run(self, make):
        try:
            self._value = make()
        except BaseException as e:  # handed to the caller of result()
            self._error = e

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


CALL_POSITIONS = 18  # one graph call costs about what 18 more token positions of a batch cost (SmolLM2: ~20 ms
                     # to stream the weights, ~1.1 ms a position)


def prefix_groups(starts: np.ndarray, kept_from: np.ndarray, call_cost: float) -> tuple[list[tuple[int, int]], float]:
    """Split rows, sorted by the position they may start from (`starts` [n]), into contiguous groups
    [lo, hi) run together from their first row's start; `kept_from[r, s]` is how many positions row r
    runs from position s on. A group costs `call_cost` plus its rows times its longest row. Returns
    the groups of least total cost (dynamic programming over the split points) and that cost."""
    n = len(starts)
    best, cut = [0.0] + [np.inf] * n, [0] * (n + 1)
    for lo in range(n):                                                  # best[lo] is final here
        longest = 0
        for hi in range(lo + 1, n + 1):
            longest = max(longest, int(kept_from[hi - 1, starts[lo]]))
            cost = best[lo] + call_cost + (hi - lo) * longest
            if cost < best[hi]:
                best[hi], cut[hi] = cost, lo
    groups, hi = [], n
    while hi:
        groups.append((cut[hi], hi))
        hi = cut[hi]
    return groups[::-1], best[n]


def load(name_or_path: str | os.PathLike, models_dir: str | os.PathLike | None = None,
         providers: list[str] | None = None, add_bos: bool | None = None, verify: bool | str = True,
         threads: int | None = None, session: bool = True) -> "Model":
    """Open an exported model (a folder, or a name in the model store) for generation and tracing.

    `add_bos` overrides the manifest's choice of prepending the BOS token to prompts; `verify="full"`
    hashes every file (by default only files whose size or mtime changed since the last check);
    `threads` caps ONNX Runtime's threads (default: one per core); `session=False` opens only the
    tokenizer and manifest (a corpus driver tokenizes; its actors run the model)."""
    folder = ModelFolder.resolve(name_or_path, models_dir)
    return Model(folder, providers=providers, add_bos=add_bos, manifest_data=folder.read_manifest(verify=verify),
                 threads=threads, session=session)


class Model:
    """An exported model: one ORT session, its tokenizer and its manifest."""

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
        # ORT releases the GIL while it reads and prepacks the weights (~1 s for SmolLM2), so the session
        # is built on a thread: load returns at once, and a caller's imports and set-up overlap it.
        self._opening = _Opening(lambda: ort.InferenceSession(str(self.store.graph), opts,
                                                              providers=_providers(providers))) if session else None
        self._session = None
        self._past_names = [f"past_key_values.{l}.{kv}" for l in range(self.n_layers) for kv in ("key", "value")]
        self._present_names = [f"present.{l}.{kv}" for l in range(self.n_layers) for kv in ("key", "value")]
        self.taps = hooks.all_taps(self.n_layers)
        self._kv_shape = (m["n_kv_heads"], m["d_head"])
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
        return self._session

    @functools.cached_property
    def providers(self) -> list[str]:
        return self.session.get_providers() if self.session else []

    @functools.cached_property
    def _inputs(self) -> set[str]:
        if not self.session:
            return set()
        # inputs with a default (logits_from) are listed as overridable initializers, not inputs
        return {i.name for i in [*self.session.get_inputs(), *self.session.get_overridable_initializers()]}

    # ---------------------------------------------------------------- tokens
    def encode(self, text: str, bos: bool | None = None) -> list[int]:
        """Token ids of a prompt; the BOS token first when the model's policy (or `bos`) says so."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if (self.add_bos if bos is None else bos) and ids:
            ids = [self.bos_token_id] + ids
        return ids

    def prompt_ids(self, prompt) -> list[int]:
        """Token ids of a prompt given as text or as token ids, checked: text must be valid Unicode
        without NUL characters and hold more than special tokens; ids must be in the vocabulary."""
        if isinstance(prompt, str):
            try:
                prompt.encode("utf-8")
            except UnicodeEncodeError:
                raise LensError("the prompt is not valid text (it holds unpaired surrogates: invalid UTF-8 "
                                "bytes?)") from None
            if "\x00" in prompt:
                raise LensError("the prompt holds a NUL character")
            ids = self.encode(prompt)
            if ids and all(i in self._special_ids for i in ids):
                raise LensError(f"the prompt is only special tokens ({self.isolated_strings(ids)}); give some text")
            return ids
        if isinstance(prompt, (bytes, bytearray)) or not hasattr(prompt, "__iter__"):
            raise LensError(f"the prompt must be text or a list of token ids, not {type(prompt).__name__}")
        ids = list(prompt)
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
            raise LensError("token ids must be integers")
        if any(not 0 <= int(i) < self.d_vocab for i in ids):
            raise LensError(f"token ids must be in 0..{self.d_vocab - 1}")
        return [int(i) for i in ids]

    def chat_prompt(self, text: str) -> str:
        """`text` as one user turn of the model's chat template, the assistant's turn opened."""
        from .chat import render
        return render(self.manifest.get("chat_template"), text, self.manifest.get("special_tokens"), self.name)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_id(self, token: str) -> int:
        """The id of one token given as text (e.g. ' is'); an error if it is several tokens."""
        ids = self.encode(token, bos=False)
        if len(ids) != 1:
            raise LensError(f"{token!r} is {len(ids)} tokens for this model, not one: "
                            f"{self.isolated_strings(ids)}")
        return ids[0]

    def token_strings(self, ids) -> list[str]:
        """Display text of each token of a sequence; a token holding part of a multi-byte character
        is shown as that character and its part, e.g. "🙂[1/2]" (see `lens.tokens`)."""
        return tokens.token_strings(self.tokenizer, ids)

    def isolated_strings(self, ids) -> list[str]:
        """Display text of unrelated tokens (e.g. a top-k list); partial characters as \\xNN bytes."""
        return tokens.isolated_strings(self.tokenizer, ids)

    def check_length(self, n_prompt: int, max_new_tokens: int) -> None:
        if n_prompt == 0:
            raise LensError("the prompt is empty")
        if max_new_tokens < 0:
            raise LensError("max_new_tokens must be >= 0")
        if n_prompt + max_new_tokens > self.n_ctx:
            raise LensError(f"prompt ({n_prompt} tokens) + {max_new_tokens} new tokens exceeds the "
                            f"model's context of {self.n_ctx} tokens")

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
            past = [np.zeros((batch, self._kv_shape[0], 0, self._kv_shape[1]), np.float32)] * len(self._past_names)
        feed.update(zip(self._past_names, past))
        graph_slices = hooks.LOGITS_FROM in self._inputs                  # older graphs compute every position
        if logits_from and graph_slices:
            feed[hooks.LOGITS_FROM] = np.asarray([logits_from], np.int64)
        names = ["logits", *self._present_names] + (self.taps if taps else [t for t in outputs if t in self.taps])
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

    def masked_probabilities(self, token_ids, masks: np.ndarray, target: int, cache=None) -> np.ndarray:
        """p(target) after the last position of `token_ids` [L], once per row of `masks` [B, L] (1 = kept,
        0 = masked out of attention; positions unchanged), computing only what the masks leave:

        - a masked position is attended by no query, so it is left out of the pass (the others keep
          their position ids), except the last, whose output is read; a row masking everything is run
          whole (its last position attends uniformly to masked keys, not to nothing);
        - the positions before a row's first masked one compute what the unmasked sequence computes,
          so a group of rows starts from the unmasked sequence's cache there. `cache` is the
          `present` of an unmasked pass over a sequence beginning with `token_ids` (one pass serves
          every prefix); without it, one is run when it saves more than it costs.

        Rows are grouped (`prefix_groups`): one graph call per group, rows left-padded to the longest."""
        masks = np.asarray(masks, dtype=np.int64)
        ids = np.asarray(token_ids, np.int64)
        length = len(ids)
        masked = masks == 0
        keep = ~masked
        keep[:, -1] = True
        keep[masked.all(1)] = True
        if "position_ids" not in self._inputs:  # a graph that numbers positions itself: run them all
            keep[:] = True
        first = np.where(masked.any(1), masked.argmax(1), length - 1).clip(max=length - 1)
        order = np.argsort(first, kind="stable")
        kept_from = np.cumsum(keep[order, ::-1], 1)[:, ::-1]             # [B, L] positions run from s on
        groups, cost = prefix_groups(first[order], kept_from, CALL_POSITIONS)
        if cache is None and first[order[groups[-1][0]]] > 0:
            whole, whole_cost = prefix_groups(np.zeros(len(masks), int), kept_from, CALL_POSITIONS)
            if cost + CALL_POSITIONS + length < whole_cost:
                cache = self.session_run(ids, logits_from=-1)["present"]
            else:
                groups, first[:] = whole, 0
        probs = np.empty(len(masks))
        for lo, hi in groups:
            rows = order[lo:hi]
            start = int(first[rows[0]])
            cols = [start + np.flatnonzero(keep[r, start:]) for r in rows]
            width = max(len(c) for c in cols)
            step = np.zeros((len(rows), width), np.int64)
            positions = np.zeros((len(rows), width), np.int64)
            mask = np.zeros((len(rows), start + width), np.int64)
            mask[:, :start] = 1
            for i, (r, c) in enumerate(zip(rows, cols)):                 # left-padded: the last positions align
                step[i, width - len(c):], positions[i, width - len(c):] = ids[c], c
                mask[i, start + width - len(c):] = masks[r, c]
            past = None if start == 0 else [np.repeat(kv[:, :, :start], len(rows), axis=0) for kv in cache]
            logits = self.session_run(step, past, attention_mask=mask, position_ids=positions,
                                      logits_from=-1)["logits"][:, -1]
            probs[rows] = sampling.softmax(logits.astype(np.float64))[:, target]
        return probs

    def generate(self, prompt: str | list[int], max_new_tokens: int = 20, sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None, stop_at_eos: bool = True, trace: bool = False) -> Generation:
        """Continue `prompt` with a KV cache: greedy by default, or sampling (temperature, top-k,
        top-p; the same seed gives the same tokens).

        With `trace=True` every tap of every position is collected from the very graph calls that
        generate (prompt pass, then one per token, plus one for the last token), so the result
        carries the full-sequence Trace without running the sequence again.
        """
        ids = self.prompt_ids(prompt)
        self.check_length(len(ids), max_new_tokens)
        if sample:
            sampling.check(temperature, top_k, top_p)
        rng = np.random.default_rng(seed)
        out_ids, probs, calls = list(ids), [], []
        past, step = None, np.asarray(ids)
        for _ in range(max_new_tokens):
            res = self.session_run(step, past, taps=trace, logits_from=0 if trace else -1)  # a trace keeps all
            calls.append(res)
            logits = res["logits"][0, -1].astype(np.float64)
            p = sampling.softmax(logits)
            if sample:
                nxt = int(rng.choice(len(p), p=sampling.distribution(logits, temperature, top_k, top_p)))
            else:
                nxt = int(np.argmax(logits))
            out_ids.append(nxt)
            probs.append(p[nxt])
            if stop_at_eos and nxt in self.eos_ids:
                break
            past, step = res["present"], np.asarray([nxt])
        settings = dict(max_new_tokens=max_new_tokens, sample=sample, temperature=temperature,
                        top_k=top_k, top_p=top_p, seed=seed)
        gen = Generation(np.asarray(out_ids, np.int64), len(ids), np.asarray(probs, np.float32), settings)
        if trace:
            if len(out_ids) > len(ids):  # the last token was sampled but never fed through the model
                calls.append(self.session_run(np.asarray(out_ids[-1:]), calls[-1]["present"], taps=True))
            elif not calls:
                calls.append(self.session_run(np.asarray(ids), taps=True))
            gen.trace = self._trace({k: np.concatenate([c[k] for c in calls], axis=1)
                                     for k in ["logits", *self.taps]})
        return gen

    def generate_batch(self, prompts, max_new_tokens: int = 20, stop_at_eos: bool = True,
                       trace: bool = False) -> list[Generation]:
        """Greedy `generate` for many prompts at once: left-padded into one batch, every row with its
        own positions and the padding masked out of attention, so each row computes what it would
        alone (equal to `generate` up to float rounding). A row that reaches EOS stops there; the
        batch runs until every row has. Needs a graph with attention_mask and position_ids inputs."""
        if max_new_tokens == 0 or not {"attention_mask", "position_ids"} <= self._inputs:
            return [self.generate(p, max_new_tokens, stop_at_eos=stop_at_eos, trace=trace) for p in prompts]
        rows = [self.prompt_ids(p) for p in prompts]
        for ids in rows:
            self.check_length(len(ids), max_new_tokens)
        lengths = np.asarray([len(ids) for ids in rows])
        width = int(lengths.max())
        pad = width - lengths                                             # left padding of each row
        ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            ids[i, pad[i]:], mask[i, pad[i]:] = r, 1
        positions = np.maximum(np.arange(width)[None] - pad[:, None], 0)
        new, probs, calls = [], [], []
        finished = np.zeros(len(rows), bool)
        past, step = None, ids
        for t in range(max_new_tokens):
            res = self.session_run(step, past, taps=trace, attention_mask=mask, position_ids=positions,
                                   logits_from=0 if trace else -1)
            calls.append(res)
            logits = res["logits"][:, -1].astype(np.float64)              # [B, d_vocab]
            p = sampling.softmax(logits)
            nxt = logits.argmax(1)
            new.append(nxt)
            probs.append(p[np.arange(len(rows)), nxt])
            finished |= np.isin(nxt, list(self.eos_ids)) if stop_at_eos else False
            if finished.all():
                break
            past, step = res["present"], nxt[:, None]
            mask = np.concatenate([mask, np.ones((len(rows), 1), np.int64)], 1)
            positions = (lengths + t)[:, None]
        if trace:  # the last tokens were chosen but never fed through the model
            fed = calls[-1]["present"][0].shape[2]                        # positions in the cache
            if mask.shape[1] == fed:                                      # the loop stopped before extending it
                mask = np.concatenate([mask, np.ones((len(rows), 1), np.int64)], 1)
            last = self.session_run(np.stack(new[-1:], 1), calls[-1]["present"], taps=True, attention_mask=mask,
                                    position_ids=(lengths + len(new) - 1)[:, None])
            calls.append(last)
            taps = {k: np.concatenate([c[k] for c in calls], axis=1) for k in ["logits", *self.taps]}
        out = []
        generated, probs = np.stack(new, 1), np.stack(probs, 1)           # [B, steps]
        for i, r in enumerate(rows):
            n_new = len(new)
            if stop_at_eos:
                hits = np.flatnonzero(np.isin(generated[i], list(self.eos_ids)))
                n_new = int(hits[0]) + 1 if len(hits) else n_new
            gen = Generation(np.asarray(r + generated[i, :n_new].tolist(), np.int64), len(r),
                             probs[i, :n_new].astype(np.float32), dict(max_new_tokens=max_new_tokens, sample=False))
            if trace:
                keep = slice(pad[i], pad[i] + len(r) + n_new)
                gen.trace = self._trace({k: v[i:i + 1, keep] for k, v in taps.items()})
            out.append(gen)
        return out

    def force(self, prompt, continuation) -> Generation:
        """Explain a given continuation instead of generating one (inseq's forced decoding): one
        full pass over prompt + continuation with every tap; each continuation token's probability
        is the model's at the position before it."""
        ids = self.prompt_ids(prompt)
        cont = self.encode(continuation, bos=False) if isinstance(continuation, str) else self.prompt_ids(continuation)
        if not cont:
            raise LensError("the continuation is empty")
        self.check_length(len(ids), len(cont))
        trace = self.run(ids + cont)
        p = sampling.softmax(trace.logits[len(ids) - 1:-1].astype(np.float64))      # [n_cont, d_vocab]
        probs = p[np.arange(len(cont)), cont].astype(np.float32)
        return Generation(np.asarray(ids + cont, np.int64), len(ids), probs, {"forced": True}, trace)

    def run(self, token_ids) -> Trace:
        """One full-sequence pass with every tap, for all positions."""
        ids = np.asarray(self.prompt_ids(token_ids), dtype=np.int64)
        if not 0 < len(ids) <= self.n_ctx:
            raise LensError(f"sequence of {len(ids)} tokens; this model takes 1 to {self.n_ctx}")
        return self._trace(self.session_run(ids, taps=True))

    def _trace(self, out: dict) -> Trace:
        hidden = np.stack([out[hooks.EMBED][0]] + [out[hooks.resid_post(l)][0] for l in range(self.n_layers)])
        acts = np.stack([out[hooks.mlp_post(l)][0] for l in range(self.n_layers)])
        return Trace(out["logits"][0], hidden, acts, out[hooks.LN_FINAL][0])
