"""`lens serve`: a Bokeh server app on loopback with a prompt box and the report's views, and the
helpers to build your own (`shared_explainer`, `add_explainer`; examples/app.py).

The model is loaded once and shared by every browser session; explanations run one at a time on a
worker thread (the event loop stays free for other sessions), and a failing request is reported to
its own session only.
"""
from __future__ import annotations

import functools
import html
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from .errors import LensError
from .settings import SERVE, ServeSettings


@functools.cache
def shared_explainer(name_or_path: str, models_dir: str | None = None):
    """One Explainer per model and process: every session of a Bokeh server app shares it (loading a
    model per session would take seconds and its memory each time)."""
    from .pipeline import Explainer
    return Explainer.load(name_or_path, models_dir=models_dir)


@functools.cache
def _worker(explainer) -> tuple:
    """The thread that runs an explainer's requests, one at a time, off the server's event loop."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="lens-explain"), threading.Lock()


MAX_SERVE_FACTORS = 10


def serve_request(explainer, limits: ServeSettings, text, n_new, methods=("grad_x_input",), factors=5, watch="",
                  chat=False, ablate_neurons="", ablate_heads=""):
    """One request of the app, checked as the CLI checks its options: (Explanation, report layout).
    `watch`: watched tokens, one per line; `ablate_neurons` and `ablate_heads`: L.N and L.H items,
    separated by commas or spaces (`lens explain --ablate`, `--ablate-head`: the what-if view then
    shows what the unedited model does)."""
    from . import interventions as I

    from .settings import DEFAULT_FACTORS, ExplainSettings
    from .viz import report_layout

    model = explainer.model
    if not isinstance(text, str) or not text.strip():
        raise LensError("the prompt is empty")
    n = len(model.prompt_ids(model.chat_prompt(text) if chat else text))
    if n > limits.max_prompt_tokens:
        raise LensError(f"the prompt has {n} tokens; this server takes at most {limits.max_prompt_tokens}")
    if not isinstance(n_new, (int, float)) or n_new != int(n_new) or not 1 <= n_new <= limits.max_new_tokens:
        raise LensError(f"new tokens must be between 1 and {limits.max_new_tokens}")
    if not isinstance(factors, (int, float)) or factors != int(factors) or not 1 <= factors <= MAX_SERVE_FACTORS:
        raise LensError(f"factors must be between 1 and {MAX_SERVE_FACTORS}")
    watched = tuple(w for w in (watch or "").split("\n") if w.strip())
    settings = ExplainSettings(max_new_tokens=int(n_new), methods=tuple(methods or ()), watch=watched, chat=bool(chat))
    dims = I.Dims.of(model.manifest)
    edits = [I.parse_neuron(s, dims) for s in _items(ablate_neurons)] + [I.parse_head(s, dims) for s in _items(ablate_heads)]
    expl = explainer.explain(text, settings, interventions=edits)
    k = min(int(factors or DEFAULT_FACTORS), expl.n_tokens - 1)
    # the layout is built here too, so its errors reach this session like the explain's do
    return expl, report_layout(expl, factors=k if k >= 1 else 0)


def _items(text) -> list[str]:
    """'3.17, 5.2 7.1' -> ['3.17', '5.2', '7.1']."""
    if not isinstance(text, str):
        raise LensError("ablations are text: LAYER.UNIT items separated by commas")
    return text.replace(",", " ").split()


def patch_request(explainer, limits: ServeSettings, clean, corrupted, answer, foil):
    """The app's patching request: (Patching, its view). The corrupted prompt is the prompt box's."""
    from .viz.patching import patching_view

    for what, text in (("clean", clean), ("corrupted", corrupted)):
        if not isinstance(text, str) or not text.strip():
            raise LensError(f"the {what} prompt is empty")
        n = len(explainer.model.prompt_ids(text))
        if n > limits.max_prompt_tokens:
            raise LensError(f"the {what} prompt has {n} tokens; this server takes at most {limits.max_prompt_tokens}")
    result = explainer.patch(clean, corrupted, answer, foil)
    return result, patching_view(result)


def add_explainer(doc, explainer, limits: ServeSettings = SERVE,
                  prompt: str = "William Shakespeare was born in the year"):
    """Add lens's prompt box, Explain button, status line and the report's views to a Bokeh document.

    For your own `bokeh serve` app (see examples/app.py): explanations run on a worker thread, so
    the event loop keeps serving other sessions; a failing request is shown to its own session only;
    prompts are capped by `limits`. Returns the root layout added."""
    from bokeh.layouts import column, row
    from bokeh.models import Button, Checkbox, MultiChoice, Spinner, TextAreaInput, TextInput

    from . import methods as M
    from .viz.style import text_div

    model = explainer.model
    worker, lock = _worker(explainer)

    def explain(*args):
        with lock:
            return serve_request(explainer, limits, *args)

    def patch(*args):
        with lock:
            return patch_request(explainer, limits, *args)

    box = TextAreaInput(title="Prompt", value=prompt, rows=3, width=600, name="prompt")
    n_new = Spinner(title="New tokens", low=1, high=limits.max_new_tokens, step=1,
                    value=min(10, limits.max_new_tokens), width=120, name="new_tokens")
    methods = MultiChoice(title="Attribution methods", value=["grad_x_input"], options=list(M.names()), width=420,
                          name="methods")
    factors = Spinner(title="Factors", low=1, high=MAX_SERVE_FACTORS, step=1, value=5, width=90, name="factors")
    watch = TextAreaInput(title="Watched tokens (one a line)", value="", rows=2, width=220, name="watch")
    chat = Checkbox(label="the model's chat template", active=False, name="chat",
                    visible=bool(model.manifest.get("chat_template")))
    neurons = TextInput(title="Ablate MLP neurons (layer.neuron, ...)", value="", width=260, name="ablate_neurons")
    heads = TextInput(title="Ablate heads (layer.head, ...)", value="", width=200, name="ablate_heads")
    clean = TextInput(title="Patch from a clean prompt (the box above is the corrupted one)", value="", width=420,
                      name="clean")
    answer = TextInput(title="Clean answer", value="", width=120, name="answer")
    foil = TextInput(title="Corrupted answer", value="", width=120, name="foil")
    patch_button = Button(label="Patch", width=120, name="patch")
    button = Button(label="Explain", button_type="primary", width=120, name="explain")
    status = text_div(f"Model: <b>{html.escape(model.name)}</b>", name="status", width=600)  # never TeX
    results = column(text_div(""), name="results")  # not empty: Bokeh warns about an empty layout

    def show(result=None, error=None):
        button.disabled = patch_button.disabled = False
        if error is not None:
            status.text = f"<span style='color:#b00020' class='lens-error'>{html.escape(error)}</span>"
            return
        done, layout = result
        said = done.text if hasattr(done, "text") else done.summary().splitlines()[0]
        status.text = f"<span class='lens-done'>{html.escape(said)}</span>"
        results.children = [layout]

    def finished(future):
        try:
            update = partial(show, result=future.result())
        except LensError as e:
            update = partial(show, error=str(e))
        except Exception as e:  # noqa: BLE001 - this session sees it; the server carries on
            update = partial(show, error=f"internal error: {e.__class__.__name__}: {e}")
        doc.add_next_tick_callback(update)

    def clicked():
        button.disabled = patch_button.disabled = True
        status.text = "explaining..."
        worker.submit(explain, box.value, n_new.value, list(methods.value), factors.value, watch.value,
                      chat.active, neurons.value, heads.value).add_done_callback(finished)

    def patch_clicked():
        button.disabled = patch_button.disabled = True
        status.text = "patching..."
        worker.submit(patch, clean.value, box.value, answer.value, foil.value).add_done_callback(finished)

    button.on_click(clicked)
    patch_button.on_click(patch_clicked)
    root = column(row(box, column(n_new, button)), row(methods, factors, watch, chat), row(neurons, heads),
                  row(clean, answer, foil, patch_button), status, results)
    doc.add_root(root)
    return root


def make_app(explainer, limits: ServeSettings = SERVE):
    """The Bokeh Application of `lens serve`: every session gets `add_explainer` on one shared model."""
    from bokeh.application import Application
    from bokeh.application.handlers import FunctionHandler

    def session(doc):
        doc.title = f"lens: {explainer.model.name}"
        add_explainer(doc, explainer, limits)

    return Application(FunctionHandler(session))


def serve(model_name, models_dir=None, limits: ServeSettings = SERVE, show: bool = False):
    from bokeh.server.server import Server

    from .pipeline import Explainer

    explainer = Explainer.load(model_name, models_dir=models_dir)
    model, port = explainer.model, limits.port
    origins = [f"127.0.0.1:{port}", f"localhost:{port}"]
    try:  # sessions a browser left are dropped after 10 s, so memory follows the live sessions
        server = Server({"/": make_app(explainer, limits)}, port=port, address="127.0.0.1",
                        allow_websocket_origin=origins, check_unused_sessions_milliseconds=5000,
                        unused_session_lifetime_milliseconds=10000)
    except OSError as e:
        raise LensError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from None
    server.start()
    print(f"lens: serving {model.name} at http://127.0.0.1:{port}/ (Ctrl-C stops)", flush=True)

    def stop():
        print("lens: stopping (SIGTERM)", file=sys.stderr, flush=True)
        server.io_loop.stop()

    signal.signal(signal.SIGTERM, lambda signum, frame: server.io_loop.add_callback_from_signal(stop))
    if show:
        server.io_loop.add_callback(server.show, "/")
    server.io_loop.start()
