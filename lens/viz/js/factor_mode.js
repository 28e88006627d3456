// The factors view's colouring toggle: a generated token coloured by the position that produced it (the
// article's rule, 0) or by its own position (1). Swaps the token columns and the sparklines' lines, then
// paints the pinned factor, else each token's dominant one.
// args: src (token boxes; tags [pinned factor, mode]), lines (the sparklines' source), toggle, palette, k,
// excluded
const mode = toggle.active == 1 ? "own" : "article";
const d = Object.assign({}, src.data);
for (const key of ["dom_color", "dom_alpha", "dom_text", "factor", "ok"]) d[key] = d[key + "_" + mode];
for (let f = 0; f < k; f++) d["act_" + f] = d["act_" + f + "_" + mode];
src.tags = [src.tags[0], toggle.active];
const show = src.tags[0], n = d.x.length;
if (show < 0) {
    d.color = d.dom_color; d.alpha = d.dom_alpha; d.text_color = d.dom_text;
} else {
    const acts = d["act_" + show], color = new Array(n), alpha = new Array(n), tc = new Array(n);
    for (let i = 0; i < n; i++) {
        color[i] = d.ok[i] ? palette[show] : excluded;
        alpha[i] = d.ok[i] ? 0.9 * acts[i] : 1.0;
        tc[i] = textColor(blend(hexrgb(color[i]), hexrgb(d.base[i]), alpha[i]));
    }
    d.color = color; d.alpha = alpha; d.text_color = tc;
}
src.data = d;
lines.data = Object.assign({}, lines.data, {ys: lines.data["ys_" + mode]});
