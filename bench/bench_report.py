"""Writing the report of an explanation of the real SmolLM2-135M (20-token prompt + 20 generated):
NMF, k-means and every view built and serialised into the standalone HTML, median of repeats. For
scale, the same run times a Bokeh document of one empty figure written the same way.

    python bench/bench_report.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import CACHE, median_time

PROMPT = "William Shakespeare was born in the year 1564 in Stratford-upon-Avon, England. He"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from bokeh.embed import file_html
    from bokeh.plotting import figure
    from bokeh.resources import INLINE
    from bokeh.settings import settings

    import lens
    from lens.export import export_model

    explainer = lens.Explainer.load(export_model("smollm2", models_dir=CACHE / "models", validate=False))
    expl = explainer.explain(PROMPT, max_new_tokens=20)
    out = Path(tempfile.mkdtemp()) / "r.html"
    expl.report(out)  # warm: imports, first serialisation
    t_report = median_time(lambda: expl.report(out), args.repeats, warmup=0)
    t_nmf = median_time(lambda: expl.factors(5), args.repeats, warmup=0)
    settings.perform_document_validation.set_value(False)  # as the report writes (and no "no renderers" warning)
    t_empty = median_time(lambda: file_html(figure(), resources=INLINE), args.repeats)
    print(f"SmolLM2, {expl.n_prompt} + {expl.n_generated} tokens, median of {args.repeats}: report written in "
          f"{t_report:.2f} s (NMF {t_nmf:.2f} s of it); an empty Bokeh page {t_empty:.2f} s; "
          f"file {out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
