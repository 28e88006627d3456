// The factors view's token colours for factor `show` (-1: each token's dominant factor), as the columns
// to assign to its source `d`; tokens left out of the factorisation stay greyed (`excluded`). Shared by
// the sparklines' hover, leave and tap and by the colouring toggle.
function factorColours(d, show, palette, excluded) {
    if (show < 0) return {color: d.dom_color, alpha: d.dom_alpha, text_color: d.dom_text};
    const n = d.x.length, acts = d["act_" + show], color = new Array(n), alpha = new Array(n), tc = new Array(n);
    for (let i = 0; i < n; i++) {
        color[i] = d.ok[i] ? palette[show] : excluded;
        alpha[i] = d.ok[i] ? 0.9 * acts[i] : 1.0;
        tc[i] = textColor(blend(hexrgb(color[i]), hexrgb(d.base[i]), alpha[i]));
    }
    return {color: color, alpha: alpha, text_color: tc};
}
