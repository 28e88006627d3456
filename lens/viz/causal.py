"""The causal views: what an intervention changed (`Explanation.what_if`) and what removing each NMF
factor does to the output (`Explanation.causal_factors`). Computes nothing."""
from __future__ import annotations

import html

import numpy as np
from bokeh.layouts import column, row

from .logit_lens import rank_grid
from .patching import effect_grid
from .style import NOTE_STYLE, display, label, text_div


def what_if_view(expl):
    """The continuation and per-token probabilities with and without the intervention side by side, and
    the logit-lens ranks of this run's tokens in the unedited and the edited model."""
    w = expl.what_if
    if not w:
        return text_div("")
    e = html.escape
    asked = "; ".join(w["interventions"])
    edited = expl.tokens[expl.n_prompt:]
    n = max(len(edited), len(w["original_tokens"]))
    cell = "padding:2px 6px;border:1px solid #ddd;font-family:monospace;white-space:pre"

    def cells(values, fmt=str):
        return "".join(f"<td style='{cell}'>{e(fmt(v)) if v is not None else ''}</td>" for v in values)

    pad = lambda xs: list(xs) + [None] * (n - len(xs))  # noqa: E731
    p_edit, p_unedited = [float(p) for p in expl.probabilities], w["unedited_probabilities"]
    delta = [a - b for a, b in zip(p_edit, p_unedited)]
    rows = [("unedited model's continuation", pad([display(t) for t in w["original_tokens"]]), str),
            ("its probability", pad(w["original_probabilities"]), lambda v: f"{v:.3f}"),
            ("with the intervention", pad([display(t) for t in edited]), str),
            ("its probability", pad(p_edit), lambda v: f"{v:.3f}"),
            ("the unedited model's probability of it", pad(p_unedited), lambda v: f"{v:.3f}"),
            ("change", pad(delta), lambda v: f"{v:+.3f}")]
    table = "".join(f"<tr><th style='text-align:left;{cell}'>{e(name)}</th>{cells(vals, fmt)}</tr>"
                    for name, vals, fmt in rows)
    forced = (" The factor lives on the unedited run's positions, so that run's continuation is kept and read "
              "token by token." if w.get("forced") else "")
    same = ("the same continuation as" if w["original_tokens"] == edited else "a different continuation from")
    head = text_div(f"<h3>What if: {e(asked)}</h3><p style='{NOTE_STYLE}'>Everything else in this report is the "
                    f"edited model's (generation, saliency, logit lens, neurons). Here: {same} the unedited "
                    f"model's.{forced}</p><div style='overflow-x:auto;max-width:1300px'><table style='border-collapse:"
                    f"collapse;font-size:12px'>{table}</table></div>", name="what_if_table", width=1300)
    if not expl.n_generated:
        return column(head, name="what_if_view")
    columns = [label(t) for t in edited]
    unedited = np.asarray(w["unedited_ranks"])
    arrange = row if len(columns) <= 8 else column  # two wide grids one above the other
    grids = arrange(rank_grid(unedited, columns, "what_if_ranks_unedited", "unedited model: rank of each token after "
                          "each layer", "generated token (edited run)"),
                rank_grid(expl.rankings(), columns, "what_if_ranks_edited", "with the intervention",
                          "generated token (edited run)"))
    return column(head, grids, name="what_if_view")


def causal_factors_view(expl, factors):
    """Factors (rows, numbered from 1 as in the factors view) x generated tokens: each token's probability
    change when the factor is removed; empty unless `Explainer.causal_factors` ran for these factors."""
    asked = expl.settings.get("causal_factors") or {}
    d = expl.causal_factors
    if not d.size or asked.get("k") != factors.k or asked.get("layers") != list(factors.layers):
        return text_div("")
    limit = float(max(np.abs(d).max(), 1e-6))
    columns = [label(t) for t in expl.tokens[expl.n_prompt:]]
    grid = effect_grid(d, columns, "causal_factors", "probability change when the factor is removed",
                       "generated token", limit, rows=[f"factor {f + 1}" for f in range(factors.k)], y_label="removed",
                       digits=3)
    strongest = np.abs(d).sum(1)
    top = int(strongest.argmax())
    note = text_div(f"<h3>Causal factors</h3><p style='{NOTE_STYLE}'>Each factor's reconstruction (its activation "
                    f"times its neuron loadings) removed from the MLP neurons at every position factorised, the "
                    f"continuation kept: how each generated token's probability moves (red: down). Factor {top + 1} moves "
                    f"them most (summed |change| {strongest[top]:.3f}).</p>", name="causal_factors_title")
    return column(note, grid, name="causal_factors_view")
