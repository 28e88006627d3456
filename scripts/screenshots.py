"""Screenshots of a report's views in headless Chromium at 1400 px, for the README and for looking.

    python scripts/screenshots.py REPORT.html OUT_DIR [--hover saliency:INDEX] [--full]

Each named view (header, saliency_view, rankings, layer_predictions, watch, factors_view, activations)
becomes OUT_DIR/<name>.png. `make screenshots` builds the README's reports on SmolLM2 and calls this.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

VIEWS = ("header", "saliency_view", "rankings", "layer_predictions", "watch_view", "factors_view", "activations")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("out")
    ap.add_argument("--hover", help="PLOT:TOKEN_INDEX to hover before the shots, e.g. saliency:12")
    ap.add_argument("--hover-spark", type=int, help="factor sparkline to hover before the shots")
    ap.add_argument("--full", action="store_true", help="also a full-page shot")
    ap.add_argument("--prefix", default="")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(Path(args.report).resolve().as_uri())
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                               "Array.from(Bokeh.index.all_views()).length > 5")
        page.wait_for_timeout(500)
        if args.hover:
            plot, index = args.hover.split(":")
            xy = page.evaluate("""([name, i]) => {
                const v = Array.from(Bokeh.index.all_views()).find(v => v.model.name === name);
                const src = Bokeh.documents[0].get_model_by_name(name + '_tokens');
                v.el.scrollIntoView();
                const r = v.el.getBoundingClientRect();
                return [r.left + v.frame.x_scale.compute(src.data.x[i]), r.top + v.frame.y_scale.compute(src.data.y[i])];
            }""", [plot, int(index)])
            page.mouse.move(*xy)
            page.wait_for_timeout(400)
        if args.hover_spark is not None:
            xy = page.evaluate("""(f) => {
                const v = Array.from(Bokeh.index.all_views()).find(v => v.model.name === 'sparkline_' + f);
                v.el.scrollIntoView();
                const r = v.el.getBoundingClientRect();
                return [r.left + r.width / 2, r.top + r.height / 2];
            }""", args.hover_spark)
            page.mouse.move(*xy)
            page.wait_for_timeout(400)
        for name in VIEWS:
            el = page.evaluate_handle("""(name) => {
                const v = Array.from(Bokeh.index.all_views()).find(v => v.model.name === name);
                return v ? v.el : null; }""", name)
            if el.as_element() is None:
                continue
            el.as_element().screenshot(path=str(out / f"{args.prefix}{name}.png"))
            print(out / f"{args.prefix}{name}.png")
        if args.full:
            page.screenshot(path=str(out / f"{args.prefix}full.png"), full_page=True)
        b.close()


if __name__ == "__main__":
    main()
