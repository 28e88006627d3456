"""Screenshots of a report's views in headless Chromium at 1400 px, for the README and for looking.

    python scripts/screenshots.py REPORT.html OUT_DIR [--prefix P] [--hover saliency:INDEX] [--hover-spark F[:TOKEN]]
    python scripts/screenshots.py DIR/report.html OUT_DIR --views corpus_browser --select "unit_select=factor 0"

Each named view (header, saliency_view, ranks_text_view, rankings, layer_predictions, watch_view, factors_view,
activations) becomes OUT_DIR/<prefix><name>.png. `make screenshots` builds the README's reports on
SmolLM2 with the article's prompts and calls this.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

VIEWS = ("header", "saliency_view", "ranks_text_view", "rankings", "layer_predictions", "watch_view", "factors_view",
         "activations")
# hover: which view it belongs to, and the JS returning the viewport point to move the mouse to
HOVER_TOKEN = """([i]) => {
    const v = Array.from(Bokeh.index.all_views()).find(v => v.model.name === 'saliency');
    const d = Bokeh.documents[0].get_model_by_name('saliency_tokens').data, r = v.el.getBoundingClientRect();
    return [r.left + v.frame.x_scale.compute(d.x[i]), r.top + v.frame.y_scale.compute(d.y[i])]; }"""
HOVER_FACTOR = """([f, x]) => {
    const v = Array.from(Bokeh.index.all_views()).find(v => v.model.name === 'sparklines');
    const r = v.el.getBoundingClientRect();
    return [r.left + v.frame.x_scale.compute(x), r.top + v.frame.y_scale.compute(f + 0.5)]; }"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("out")
    ap.add_argument("--prefix", default="")
    ap.add_argument("--hover", help="saliency:TOKEN_INDEX to hover in the saliency view")
    ap.add_argument("--hover-spark", help="F or F:TOKEN: the factor whose sparkline to hover in the factors view "
                    "(at token 1, or TOKEN: the saliency of factors, where computed, paints that point)")
    ap.add_argument("--views", help="comma-separated view names (default: the explain report's)")
    ap.add_argument("--select", action="append", default=[],
                    help="NAME=PREFIX: set the Select widget NAME to its first option starting with PREFIX")
    args = ap.parse_args()
    views = args.views.split(",") if args.views else VIEWS
    from playwright.sync_api import sync_playwright

    hovers = {}
    if args.hover:
        hovers["saliency_view"] = (HOVER_TOKEN, int(args.hover.split(":")[1]))
    if args.hover_spark is not None:
        f, _, x = args.hover_spark.partition(":")
        hovers["factors_view"] = (HOVER_FACTOR, [int(f), int(x or 1)])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1400, "height": 2200})
        page.goto(Path(args.report).resolve().as_uri())
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                               "Array.from(Bokeh.index.all_views()).length > 2")
        for choice in args.select:
            name, prefix = choice.split("=", 1)
            page.evaluate("""([name, prefix]) => {
                const s = Bokeh.documents[0].get_model_by_name(name);
                s.value = s.options.find(o => o.startsWith(prefix)); }""", [name, prefix])
        page.wait_for_timeout(500)
        for name in views:
            rect = page.evaluate("""(name) => {
                const v = Array.from(Bokeh.index.all_views()).find(v => v.model.name === name);
                if (!v) return null;
                v.el.scrollIntoView();
                const r = v.el.getBoundingClientRect();
                return {x: r.left, y: r.top, width: r.width, height: r.height}; }""", name)
            if rect is None:
                continue
            if name in hovers:  # hover inside the view as it stands, then shoot without scrolling
                js, arg = hovers[name]
                page.mouse.move(*page.evaluate(js, arg if isinstance(arg, list) else [arg]))
                page.wait_for_timeout(400)
            else:
                page.mouse.move(0, 0)
            page.screenshot(path=str(out / f"{args.prefix}{name}.png"), clip=rect)
            print(out / f"{args.prefix}{name}.png")
        b.close()


if __name__ == "__main__":
    main()
