"""`lens serve`: a Bokeh server app on loopback with a prompt box and the report's views.

The model is loaded once and shared by every browser session; explanations run one at a time on a
worker thread (the event loop stays free for other sessions), and a failing request is reported to
its own session only.
"""
from __future__ import annotations

import html
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from .errors import LensError
from .settings import SERVE, ServeSettings


def make_app(explainer, limits: ServeSettings = SERVE):
    from bokeh.application import Application
    from bokeh.application.handlers import FunctionHandler
    from bokeh.layouts import column, row
    from bokeh.models import Button, Div, Spinner, TextAreaInput

    from .viz import report_layout

    model = explainer.model
    max_prompt_tokens, max_new_tokens = limits.max_prompt_tokens, limits.max_new_tokens
    worker = ThreadPoolExecutor(max_workers=1)
    lock = threading.Lock()

    def explain(text: str, n_new: int):
        if not text.strip():
            raise LensError("the prompt is empty")
        n = len(model.encode(text))
        if n > max_prompt_tokens:
            raise LensError(f"the prompt has {n} tokens; this server takes at most {max_prompt_tokens}")
        if not 1 <= n_new <= max_new_tokens:
            raise LensError(f"new tokens must be between 1 and {max_new_tokens}")
        with lock:
            expl = explainer.explain(text, max_new_tokens=n_new)
        # the layout is built here too, so its errors reach this session like the explain's do
        return expl, report_layout(expl)

    def session(doc):
        prompt = TextAreaInput(title="Prompt", value="William Shakespeare was born in the year", rows=3,
                               width=600, name="prompt")
        n_new = Spinner(title="New tokens", low=1, high=max_new_tokens, step=1,
                        value=min(10, max_new_tokens), width=120, name="new_tokens")
        button = Button(label="Explain", button_type="primary", width=120, name="explain")
        status = Div(text=f"Model: <b>{html.escape(model.name)}</b>", name="status", width=600,
                     disable_math=True)  # prompts and generated text must never be typeset as TeX
        results = column(name="results")

        def show(result=None, error=None):
            button.disabled = False
            if error is not None:
                status.text = f"<span style='color:#b00020' class='lens-error'>{html.escape(error)}</span>"
                return
            expl, layout = result
            status.text = f"<span class='lens-done'>{html.escape(expl.text)}</span>"
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
            button.disabled = True
            status.text = "explaining..."
            worker.submit(explain, prompt.value, int(n_new.value)).add_done_callback(finished)

        button.on_click(clicked)
        doc.title = f"lens: {model.name}"
        doc.add_root(column(row(prompt, column(n_new, button)), status, results))

    return Application(FunctionHandler(session))


def serve(model_name, models_dir=None, limits: ServeSettings = SERVE, show: bool = False):
    from bokeh.server.server import Server

    from .pipeline import Explainer

    explainer = Explainer.load(model_name, models_dir=models_dir)
    model, port = explainer.model, limits.port
    origins = [f"127.0.0.1:{port}", f"localhost:{port}"]
    try:
        server = Server({"/": make_app(explainer, limits)}, port=port,
                        address="127.0.0.1", allow_websocket_origin=origins)
    except OSError as e:
        raise LensError(f"cannot listen on 127.0.0.1:{port}: {e.strerror}") from None
    server.start()
    print(f"lens: serving {model.name} at http://127.0.0.1:{port}/ (Ctrl-C stops)", flush=True)
    if show:
        server.io_loop.add_callback(server.show, "/")
    server.io_loop.start()
