"""Headless Chromium for the tests (Debian's `chromium`, driven by Playwright): the browser, a page
that records every request, console message and dialog, and reads a Bokeh document's own data and
geometry. A helper module, not a test module: the browser test files share it."""
from __future__ import annotations

import shutil
import socket
import time

import numpy as np

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_process(folder, max_new_tokens: int, max_prompt_tokens: int):
    """`lens serve` on a free loopback port, once it says it is serving: (process, url)."""
    import subprocess
    import sys

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lens", "serve", "--model", str(folder), "--port", str(port),
                             "--max-new-tokens", str(max_new_tokens), "--max-prompt-tokens", str(max_prompt_tokens)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "serving" in proc.stdout.readline()
    return proc, f"http://127.0.0.1:{port}/"


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)


class Page:
    """A page with every request, console message and dialog recorded."""

    def __init__(self, browser, offline=True):
        self.ctx = browser.new_context(viewport={"width": 1400, "height": 2000}, offline=offline)
        self.page = self.ctx.new_page()
        self.requests, self.console, self.dialogs = [], [], []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.console.append(("pageerror", str(e))))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def data(self, source: str, column: str):
        return self.page.evaluate(
            "([s, c]) => Array.from(Bokeh.documents[0].get_model_by_name(s).data[c])", [source, column])

    def screen_xy(self, plot: str, x: float, y: float):
        """Viewport pixel of data point (x, y) in the plot named `plot`."""
        return self.page.evaluate("""([name, x, y]) => {
            const v = Array.from(Bokeh.index.all_views()).find(v => v.model.name === name);
            const r = v.el.getBoundingClientRect();
            return [r.left + v.frame.x_scale.compute(x), r.top + v.frame.y_scale.compute(y)];
        }""", [plot, x, y])

    def hover(self, plot, x, y):
        self.page.mouse.move(*self.screen_xy(plot, x, y))
        self.page.wait_for_timeout(300)

    def click(self, plot, x, y):
        self.page.mouse.click(*self.screen_xy(plot, x, y))
        self.page.wait_for_timeout(300)

    def text_of(self, model: str) -> str:
        """The text a reader sees in a Div (rendered, not its HTML source)."""
        return self.page.evaluate("""(name) => {
            const v = Array.from(Bokeh.index.all_views()).find(v => v.model.name === name);
            return (v.shadow_el || v.el.shadowRoot || v.el).textContent; }""", model)

    def choose(self, model: str, value: str):
        """Pick an option in a Select widget as a user does (its real <select> element)."""
        self.page.evaluate("""([name, value]) => {
            const v = Array.from(Bokeh.index.all_views()).find(v => v.model.name === name);
            const root = v.shadow_el || v.el.shadowRoot || v.el;
            const s = root.querySelector('select');
            const values = v.model.options.map(o => Array.isArray(o) ? o[0] : o);
            s.selectedIndex = values.indexOf(value);  // option elements carry the labels
            s.dispatchEvent(new Event('change', {bubbles: true}));
            s.dispatchEvent(new Event('input', {bubbles: true})); }""", [model, value])
        self.page.wait_for_timeout(300)

    def pixel(self, plot, x, y, dy=-9):
        """RGB on screen just above the text baseline at data point (x, y)."""
        px, py = self.screen_xy(plot, x, y)
        png = self.page.screenshot(clip={"x": px - 1, "y": py + dy, "width": 3, "height": 3})
        import io

        from PIL import Image  # pillow comes with bokeh
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).mean(0)

    def close(self):
        self.ctx.close()
